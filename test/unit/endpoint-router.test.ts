import { describe, expect, it, vi } from 'vitest';
import { DedupWindow, newMessageId, tag, untag } from '../../src/backplane/endpoints/dedup-window.js';
import {
  DefaultEndpointRouter,
  type EndpointView,
  type NegotiateRequest,
} from '../../src/backplane/endpoints/endpoint-router.js';
import { inboxEndpointOf } from '../../src/redis/endpoints.js';

const view = (
  name: string,
  type: 'primary' | 'secondary',
  online: boolean,
  listening = false,
): EndpointView => ({
  name,
  type,
  online,
  listening,
});

const names = (views: readonly EndpointView[] | undefined) => (views ?? []).map((v) => v.name);

describe('DefaultEndpointRouter', () => {
  const router = new DefaultEndpointRouter();
  const endpoints = [
    view('a', 'primary', true, true),
    view('b', 'secondary', true),
    view('c', 'secondary', false),
  ];

  it('sends broadcasts, groups and users to every online endpoint', () => {
    expect(names(router.endpointsForBroadcast(endpoints))).toEqual(['a', 'b']);
    expect(names(router.endpointsForGroup('g', endpoints))).toEqual(['a', 'b']);
    expect(names(router.endpointsForUser('alice', endpoints))).toEqual(['a', 'b']);
  });

  it('sends to a local connection through its owning endpoint, to any other through every online one', () => {
    expect(names(router.endpointsForConnection('c1', endpoints, endpoints[0]))).toEqual(['a']);
    expect(names(router.endpointsForConnection('c2', endpoints, undefined))).toEqual(['a', 'b']);
  });

  it('keeps a user inbox on inboxEndpointOf over every endpoint, online or not', () => {
    for (const user of ['alice', 'bob', 'carol', 'dave', 'erin']) {
      expect(router.inboxEndpoint(user, endpoints).name).toBe(inboxEndpointOf(user, endpoints).name);
    }
  });

  it('negotiates a random online primary, else an online secondary, else nothing', async () => {
    const request = {} as NegotiateRequest;
    const two = [view('a', 'primary', true), view('b', 'primary', true), view('c', 'secondary', true)];
    const picked = new Set<string>();
    for (let i = 0; i < 200; i++)
      picked.add(((await router.negotiateEndpoint(request, two)) as EndpointView).name);
    expect([...picked].sort()).toEqual(['a', 'b']);
    const noPrimary = [view('a', 'primary', false), view('c', 'secondary', true)];
    expect((await router.negotiateEndpoint(request, noPrimary))?.name).toBe('c');
    expect(await router.negotiateEndpoint(request, [view('a', 'primary', false)])).toBeUndefined();
  });

  it('can be extended one decision at a time', () => {
    class EastGroups extends DefaultEndpointRouter {
      override endpointsForGroup(group: string, all: readonly EndpointView[]): readonly EndpointView[] {
        return group.startsWith('east-')
          ? all.filter((e) => e.name === 'a')
          : super.endpointsForGroup(group, all);
      }
    }
    const east = new EastGroups();
    expect(names(east.endpointsForGroup('east-1', endpoints))).toEqual(['a']);
    expect(names(east.endpointsForGroup('west-1', endpoints))).toEqual(['a', 'b']);
    expect(names(east.endpointsForBroadcast(endpoints))).toEqual(['a', 'b']);
  });
});

describe('message ids and the dedup window', () => {
  it('tags and untags a value, and leaves an untagged one alone', () => {
    const id = newMessageId();
    expect(newMessageId()).not.toBe(id);
    expect(untag(tag(id, '{"type":1}\u001e'))).toEqual({ id, value: '{"type":1}\u001e' });
    expect(untag(tag(id, 'multi\nline'))).toEqual({ id, value: 'multi\nline' });
    expect(untag('plain')).toEqual({ id: undefined, value: 'plain' });
  });

  it('drops a key seen within the window', () => {
    const window = new DedupWindow();
    expect(window.add('k', true)).toBe(true);
    expect(window.add('k', true)).toBe(false);
    expect(window.get('k')).toBe(true);
  });

  it('holds at most maxEntries keys, forgetting the oldest first', () => {
    const window = new DedupWindow({ maxEntries: 3 });
    for (const key of ['a', 'b', 'c', 'd']) window.add(key, true);
    expect(window.size).toBe(3);
    expect(window.get('a')).toBeUndefined();
    expect(window.get('d')).toBe(true);
  });

  it('forgets keys older than windowMs', () => {
    vi.useFakeTimers();
    try {
      const window = new DedupWindow({ windowMs: 1_000 });
      window.add('old', true);
      vi.advanceTimersByTime(600);
      window.add('young', true);
      vi.advanceTimersByTime(600);
      expect(window.get('old')).toBeUndefined();
      expect(window.get('young')).toBe(true);
      expect(window.add('old', true)).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });
});
