import { describe, expect, it } from 'vitest';
import type { Audience } from '../../src/backplane/backplane.js';
import { type Addressable, LocalRegistry } from '../../src/hub/local-registry.js';

class FakeConnection implements Addressable {
  readonly frames: string[] = [];
  constructor(
    readonly connectionId: string,
    readonly userId: string | undefined = undefined,
  ) {}
  write(frame: string): void {
    this.frames.push(frame);
  }
}

/** The ids of the connections an audience resolves to, sorted (resolution order is not specified). */
const ids = (registry: LocalRegistry<FakeConnection>, audience: Audience): string[] =>
  [...registry.resolve(audience)].map((c) => c.connectionId).sort();

/**
 * c1 (alice), c2 (alice), c3 (bob), c4 (anonymous); groups: red = {c1, c3}, blue = {c2, c3},
 * green = {c4}.
 */
function populated() {
  const registry = new LocalRegistry<FakeConnection>();
  const c1 = new FakeConnection('c1', 'alice');
  const c2 = new FakeConnection('c2', 'alice');
  const c3 = new FakeConnection('c3', 'bob');
  const c4 = new FakeConnection('c4');
  for (const c of [c1, c2, c3, c4]) registry.add(c);
  registry.joinGroup(c1, 'red');
  registry.joinGroup(c3, 'red');
  registry.joinGroup(c2, 'blue');
  registry.joinGroup(c3, 'blue');
  registry.joinGroup(c4, 'green');
  return { registry, c1, c2, c3, c4 };
}

describe('LocalRegistry: membership', () => {
  it('starts empty', () => {
    const registry = new LocalRegistry<FakeConnection>();
    expect(registry.size).toBe(0);
    expect([...registry.connections()]).toEqual([]);
    expect(ids(registry, { kind: 'all' })).toEqual([]);
  });

  it('adds connections and finds them by id', () => {
    const { registry, c1, c4 } = populated();
    expect(registry.size).toBe(4);
    expect(registry.get('c1')).toBe(c1);
    expect(registry.get('c4')).toBe(c4);
    expect(registry.get('nope')).toBeUndefined();
    expect([...registry.connections()].map((c) => c.connectionId).sort()).toEqual(['c1', 'c2', 'c3', 'c4']);
  });

  it("tells when a connection is its user's first one", () => {
    const registry = new LocalRegistry<FakeConnection>();
    expect(registry.add(new FakeConnection('a1', 'alice'))).toBe(true);
    expect(registry.add(new FakeConnection('a2', 'alice'))).toBe(false);
    expect(registry.add(new FakeConnection('b1', 'bob'))).toBe(true);
    expect(registry.add(new FakeConnection('x1'))).toBe(false);
  });

  it('tracks the groups of a connection, and joining twice is harmless', () => {
    const { registry, c1, c3 } = populated();
    expect([...registry.groupsOf(c3)].sort()).toEqual(['blue', 'red']);
    expect(registry.joinGroup(c1, 'red')).toBe(false);
    expect(ids(registry, { kind: 'groups', names: ['red'] })).toEqual(['c1', 'c3']);
    expect([...registry.groupsOf(c1)]).toEqual(['red']);
  });

  it('tells when a join creates a group and when a leave empties it', () => {
    const registry = new LocalRegistry<FakeConnection>();
    const a = new FakeConnection('a');
    const b = new FakeConnection('b');
    registry.add(a);
    registry.add(b);
    expect(registry.joinGroup(a, 'g')).toBe(true);
    expect(registry.joinGroup(b, 'g')).toBe(false);
    expect(registry.leaveGroup(a, 'g')).toBe(false);
    expect(registry.leaveGroup(a, 'g')).toBe(false);
    expect(registry.leaveGroup(b, 'g')).toBe(true);
    expect(ids(registry, { kind: 'groups', names: ['g'] })).toEqual([]);
    expect(registry.joinGroup(a, 'g')).toBe(true);
  });

  it('leaves a group without touching the other groups', () => {
    const { registry, c3 } = populated();
    registry.leaveGroup(c3, 'red');
    expect(ids(registry, { kind: 'groups', names: ['red'] })).toEqual(['c1']);
    expect(ids(registry, { kind: 'groups', names: ['blue'] })).toEqual(['c2', 'c3']);
    expect([...registry.groupsOf(c3)]).toEqual(['blue']);
  });

  it('leaving a group the connection is not in does nothing', () => {
    const { registry, c1 } = populated();
    expect(registry.leaveGroup(c1, 'blue')).toBe(false);
    expect(registry.leaveGroup(c1, 'nowhere')).toBe(false);
    expect(ids(registry, { kind: 'groups', names: ['blue'] })).toEqual(['c2', 'c3']);
  });
});

describe('LocalRegistry: resolve', () => {
  it('all: every connection', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'all' })).toEqual(['c1', 'c2', 'c3', 'c4']);
    expect(ids(registry, { kind: 'all', except: [] })).toEqual(['c1', 'c2', 'c3', 'c4']);
  });

  it('all with an except list: every connection but those (unknown ids are ignored)', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'all', except: ['c2'] })).toEqual(['c1', 'c3', 'c4']);
    expect(ids(registry, { kind: 'all', except: ['c1', 'c4', 'zz'] })).toEqual(['c2', 'c3']);
    expect(ids(registry, { kind: 'all', except: ['c1', 'c2', 'c3', 'c4'] })).toEqual([]);
  });

  it('connections: the listed ones that are here, each once', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'connections', ids: ['c3'] })).toEqual(['c3']);
    expect(ids(registry, { kind: 'connections', ids: ['c1', 'zz', 'c4'] })).toEqual(['c1', 'c4']);
    expect([...registry.resolve({ kind: 'connections', ids: ['c2', 'c2', 'c2'] })]).toHaveLength(1);
    expect(ids(registry, { kind: 'connections', ids: [] })).toEqual([]);
    expect(ids(registry, { kind: 'connections', ids: ['zz'] })).toEqual([]);
  });

  it('groups: the members of one group', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'groups', names: ['red'] })).toEqual(['c1', 'c3']);
    expect(ids(registry, { kind: 'groups', names: ['green'] })).toEqual(['c4']);
    expect(ids(registry, { kind: 'groups', names: ['nope'] })).toEqual([]);
    expect(ids(registry, { kind: 'groups', names: [] })).toEqual([]);
  });

  it('groups: the members of several groups, each once even when in several of them', () => {
    const { registry } = populated();
    const members = [...registry.resolve({ kind: 'groups', names: ['red', 'blue'] })];
    expect(members.map((c) => c.connectionId).sort()).toEqual(['c1', 'c2', 'c3']);
    expect(ids(registry, { kind: 'groups', names: ['red', 'blue', 'green', 'nope'] })).toEqual([
      'c1',
      'c2',
      'c3',
      'c4',
    ]);
    expect([...registry.resolve({ kind: 'groups', names: ['red', 'red'] })]).toHaveLength(2);
  });

  it('groups with an except list', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'groups', names: ['red'], except: ['c3'] })).toEqual(['c1']);
    expect(ids(registry, { kind: 'groups', names: ['red', 'blue'], except: ['c3'] })).toEqual(['c1', 'c2']);
    expect(ids(registry, { kind: 'groups', names: ['red'], except: ['c1', 'c3'] })).toEqual([]);
    expect(ids(registry, { kind: 'groups', names: ['red'], except: ['c2'] })).toEqual(['c1', 'c3']);
  });

  it('groups with notIn: skips members that are also in the other groups', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'groups', names: ['blue'], notIn: ['red'] })).toEqual(['c2']);
    expect(ids(registry, { kind: 'groups', names: ['red'], notIn: ['blue', 'green'] })).toEqual(['c1']);
    expect(ids(registry, { kind: 'groups', names: ['red'], notIn: [] })).toEqual(['c1', 'c3']);
    expect(ids(registry, { kind: 'groups', names: ['red'], notIn: ['red'] })).toEqual([]);
  });

  it('users: every connection of the user', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'users', ids: ['alice'] })).toEqual(['c1', 'c2']);
    expect(ids(registry, { kind: 'users', ids: ['bob'] })).toEqual(['c3']);
    expect(ids(registry, { kind: 'users', ids: ['nobody'] })).toEqual([]);
    expect(ids(registry, { kind: 'users', ids: [] })).toEqual([]);
  });

  it('users: every connection of several users, each once', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'users', ids: ['alice', 'bob', 'nobody'] })).toEqual(['c1', 'c2', 'c3']);
    expect([...registry.resolve({ kind: 'users', ids: ['alice', 'alice'] })]).toHaveLength(2);
  });

  it('anonymous connections belong to no user', () => {
    const { registry } = populated();
    expect(ids(registry, { kind: 'users', ids: ['undefined', ''] })).toEqual([]);
  });
});

describe('LocalRegistry: deliver', () => {
  it('writes the frame once to each connection of the audience', () => {
    const { registry, c1, c2, c3, c4 } = populated();
    registry.deliver({ kind: 'groups', names: ['red', 'blue'] }, 'F1');
    expect(c1.frames).toEqual(['F1']);
    expect(c2.frames).toEqual(['F1']);
    expect(c3.frames).toEqual(['F1']);
    expect(c4.frames).toEqual([]);
    registry.deliver({ kind: 'users', ids: ['alice'] }, 'F2');
    registry.deliver({ kind: 'all', except: ['c1'] }, 'F3');
    registry.deliver({ kind: 'connections', ids: ['c4', 'c4'] }, 'F4');
    expect(c1.frames).toEqual(['F1', 'F2']);
    expect(c2.frames).toEqual(['F1', 'F2', 'F3']);
    expect(c3.frames).toEqual(['F1', 'F3']);
    expect(c4.frames).toEqual(['F3', 'F4']);
  });

  it('keeps delivering to the others when a connection removes itself while being written to', () => {
    const registry = new LocalRegistry<FakeConnection>();
    const others = [new FakeConnection('a'), new FakeConnection('c')];
    const leaving = new FakeConnection('b');
    leaving.write = (frame) => {
      leaving.frames.push(frame);
      registry.remove(leaving);
    };
    for (const c of [others[0] as FakeConnection, leaving, others[1] as FakeConnection]) {
      registry.add(c);
      registry.joinGroup(c, 'g');
    }
    registry.deliver({ kind: 'groups', names: ['g'] }, 'F');
    expect(leaving.frames).toEqual(['F']);
    expect(others.map((c) => c.frames)).toEqual([['F'], ['F']]);
    expect(registry.size).toBe(2);
  });
});

describe('LocalRegistry: remove', () => {
  it('removes the connection from the ids, its user and its groups', () => {
    const { registry, c3 } = populated();
    registry.remove(c3);
    expect(registry.size).toBe(3);
    expect(registry.get('c3')).toBeUndefined();
    expect(ids(registry, { kind: 'all' })).toEqual(['c1', 'c2', 'c4']);
    expect(ids(registry, { kind: 'users', ids: ['bob'] })).toEqual([]);
    expect(ids(registry, { kind: 'groups', names: ['red'] })).toEqual(['c1']);
    expect(ids(registry, { kind: 'groups', names: ['blue'] })).toEqual(['c2']);
    expect(ids(registry, { kind: 'connections', ids: ['c3'] })).toEqual([]);
    expect([...registry.groupsOf(c3)]).toEqual([]);
  });

  it('reports the user and the groups that have no member left', () => {
    const { registry, c1, c2, c3, c4 } = populated();
    expect(registry.remove(c1)).toEqual({ userGone: false, groupsGone: [] });
    expect(registry.remove(c4)).toEqual({ userGone: false, groupsGone: ['green'] });
    const last = registry.remove(c3);
    expect(last.userGone).toBe(true);
    expect(last.groupsGone).toEqual(['red']);
    const gone = registry.remove(c2);
    expect(gone.userGone).toBe(true);
    expect(gone.groupsGone).toEqual(['blue']);
    expect(registry.size).toBe(0);
    for (const name of ['red', 'blue', 'green'])
      expect(ids(registry, { kind: 'groups', names: [name] })).toEqual([]);
    expect(ids(registry, { kind: 'users', ids: ['alice', 'bob'] })).toEqual([]);
  });

  it('keeps the user while another of its connections remains', () => {
    const { registry, c1 } = populated();
    registry.remove(c1);
    expect(ids(registry, { kind: 'users', ids: ['alice'] })).toEqual(['c2']);
  });

  it('lets a removed connection id be added again with fresh memberships', () => {
    const { registry, c1 } = populated();
    registry.remove(c1);
    const again = new FakeConnection('c1', 'alice');
    expect(registry.add(again)).toBe(false);
    expect(registry.get('c1')).toBe(again);
    expect([...registry.groupsOf(again)]).toEqual([]);
    expect(ids(registry, { kind: 'groups', names: ['red'] })).toEqual(['c3']);
  });

  it('ignores a second remove, and a stale object that shares the id of a registered connection', () => {
    const { registry, c2 } = populated();
    registry.remove(c2);
    expect(registry.remove(c2)).toEqual({ userGone: false, groupsGone: [] });
    expect(registry.size).toBe(3);
    const stale = new FakeConnection('c1', 'alice');
    expect(registry.remove(stale)).toEqual({ userGone: false, groupsGone: [] });
    expect(registry.get('c1')).not.toBe(stale);
    expect(ids(registry, { kind: 'users', ids: ['alice'] })).toEqual(['c1']);
    expect(ids(registry, { kind: 'groups', names: ['red'] })).toEqual(['c1', 'c3']);
  });
});

describe('LocalRegistry: hasUser', () => {
  it('says whether a connection of the user is here, until the last one leaves', () => {
    const { registry, c1, c2 } = populated();
    expect(registry.hasUser('alice')).toBe(true);
    expect(registry.hasUser('carol')).toBe(false);
    registry.remove(c1);
    expect(registry.hasUser('alice')).toBe(true);
    registry.remove(c2);
    expect(registry.hasUser('alice')).toBe(false);
  });
});
