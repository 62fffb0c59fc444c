/** The owned partitions of a worker as SQL: one `(hub = $n AND partition = ANY($n+1))` per hub that has some. */
import { describe, expect, it } from 'vitest';
import { ownedCondition } from '../../src/outbox/owned-condition.js';

describe('ownedCondition', () => {
  it('numbers its parameters from the given one, one pair per hub with partitions', () => {
    expect(
      ownedCondition(
        [
          { hub: '/hubs/a', partitions: [1, 2] },
          { hub: '/hubs/empty', partitions: [] },
          { hub: '/hubs/b', partitions: [63] },
        ],
        4,
      ),
    ).toEqual({
      sql: '((hub = $4 AND partition = ANY($5::smallint[])) OR (hub = $6 AND partition = ANY($7::smallint[])))',
      params: ['/hubs/a', [1, 2], '/hubs/b', [63]],
    });
  });

  it('is false when nothing is owned', () => {
    expect(ownedCondition([{ hub: '/hubs/a', partitions: [] }], 1)).toEqual({ sql: 'false', params: [] });
    expect(ownedCondition([], 1)).toEqual({ sql: 'false', params: [] });
  });
});
