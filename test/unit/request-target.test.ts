import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { DeferredRequest, snapshotRequest } from '../../src/hub/hub-request.js';
import { decodePathSegment, parseRequestTarget } from '../../src/hub/request-target.js';

const parse = (url: string | undefined) => parseRequestTarget({ url });

describe('parseRequestTarget', () => {
  it('keeps origin-form paths and queries as sent (still encoded)', () => {
    const url = parse('/hubs/demo/negotiate?negotiateVersion=1&access_token=a%2Bb');
    expect(url?.pathname).toBe('/hubs/demo/negotiate');
    expect(url?.searchParams.get('access_token')).toBe('a+b');
    expect(parse('/api/orders/A%2F17/status')?.pathname).toBe('/api/orders/A%2F17/status');
  });

  it('never takes an origin-form target for an authority (those threw in new URL(target, base))', () => {
    for (const target of ['//[', '//a:b', '//:99999', '//evil.example/healthz', '//%41']) {
      const url = parse(target);
      expect(url, target).toBeDefined();
      expect(url?.host, target).toBe('relayhub.invalid');
      expect(url?.pathname.startsWith('//'), target).toBe(true);
    }
  });

  it('keeps only the path and query of an absolute-form http(s) target', () => {
    const url = parse('http://evil.example:8080/healthz?x=1');
    expect(url?.host).toBe('relayhub.invalid');
    expect(url?.pathname).toBe('/healthz');
    expect(url?.search).toBe('?x=1');
    expect(parse('https://a/b')?.pathname).toBe('/b');
  });

  it('refuses what is neither, and paths whose escapes do not decode', () => {
    for (const target of [
      undefined,
      '',
      '*',
      'foo',
      'a:b',
      'ftp://x/',
      'javascript:alert(1)',
      'http://[',
      'http://a b/',
      '/%',
      '/%zz',
      '/%E0%A4%A',
      '/%C3',
      '//%',
      'http://x/%E0%A4%A',
      '/api\\orders/1/status',
      'http://x/a\\b',
    ]) {
      expect(parse(target), String(target)).toBeUndefined();
    }
  });

  it('accepts escapes in the query that do not decode (URLSearchParams is lenient)', () => {
    expect(parse('/healthz?a=%zz&b=%E0%A4%A')?.searchParams.get('a')).toBe('%zz');
  });
});

describe('decodePathSegment', () => {
  it('decodes, or answers undefined instead of throwing', () => {
    expect(decodePathSegment('A%2F17')).toBe('A/17');
    expect(decodePathSegment('%E0%A4%A')).toBeUndefined();
  });
});

describe('snapshotRequest', () => {
  const request = (headers: Record<string, string | string[]>, remoteAddress = '10.0.0.7') =>
    ({ method: 'GET', headers, socket: { remoteAddress } }) as unknown as IncomingMessage;

  it('copies headers, cookies, query and address into frozen objects', () => {
    const snapshot = snapshotRequest(
      request({ cookie: 'a=1; b="two"; c=%E2%82%AC; d=%zz; a=again; =x; junk', 'x-list': ['p', 'q'] }),
      new URL('http://relayhub.invalid/hubs/demo?room=lobby&room=other&id=t'),
    );
    expect(snapshot).toEqual({
      method: 'GET',
      path: '/hubs/demo',
      query: { room: 'lobby', id: 't' },
      headers: { cookie: expect.any(String), 'x-list': 'p, q' },
      cookies: { a: '1', b: 'two', c: '€', d: '%zz' },
      remoteAddress: '10.0.0.7',
    });
    expect(Object.isFrozen(snapshot)).toBe(true);
    expect(Object.isFrozen(snapshot.cookies)).toBe(true);
    expect(Object.isFrozen(snapshot.query)).toBe(true);
  });

  it('keeps a __proto__ header or cookie as plain data', () => {
    const snapshot = snapshotRequest(
      request({ __proto__: 'x', cookie: '__proto__=y' } as unknown as Record<string, string>),
      new URL('http://relayhub.invalid/?__proto__=z'),
    );
    expect(snapshot.cookies.__proto__).toBe('y');
    expect(snapshot.query.__proto__).toBe('z');
  });

  it('taken on first use, equals the snapshot taken at once, whatever the header values hold', () => {
    const cases: [Record<string, string | string[]>, string | undefined, string][] = [
      [
        { cookie: 'a=1; b="two"', 'x-list': ['p', 'q'] },
        '10.0.0.7',
        'http://h.invalid/hubs/demo?room=lobby&id=t',
      ],
      [
        { 'x-digits': '12:34:', 'x-empty': '', 'x-colon': ':', 'x-latin': 'caf\u00e9 \u00ff' },
        '::1',
        'http://h.invalid/a%20b?q=%E2%82%AC&q=2',
      ],
      [
        { __proto__: 'x', cookie: '__proto__=y' } as unknown as Record<string, string>,
        undefined,
        'http://h.invalid/',
      ],
    ];
    for (const [headers, address, target] of cases) {
      const req = {
        method: 'POST',
        headers,
        socket: { remoteAddress: address },
      } as unknown as IncomingMessage;
      const url = new URL(target);
      const deferred = new DeferredRequest(req, url);
      const snapshot = deferred.get();
      expect(snapshot).toEqual(snapshotRequest(req, url));
      expect(snapshot.remoteAddress).toBe(address);
      expect(Object.isFrozen(snapshot.headers)).toBe(true);
      expect(deferred.get()).toBe(snapshot);
    }
  });
});
