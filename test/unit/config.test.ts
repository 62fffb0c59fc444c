import { describe, expect, it } from 'vitest';
import { DEFAULT_HUB_OPTIONS, type HubOptions, resolveHubOptions, stripUndefined } from '../../src/config.js';
import { RelayhubError } from '../../src/errors.js';

/** Runs `fn` and returns what it threw, failing when it did not throw. */
function thrown(fn: () => unknown): RelayhubError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(RelayhubError);
    return error as RelayhubError;
  }
  throw new Error('expected an error');
}

const integerOptions = [
  'keepAliveIntervalMs',
  'clientTimeoutMs',
  'handshakeTimeoutMs',
  'negotiateTimeoutMs',
  'maximumReceiveMessageSize',
  'maximumParallelInvocationsPerClient',
  'maxQueuedInvocationsPerClient',
  'streamBufferCapacity',
  'maxBufferedBytesPerClient',
  'clientResultTimeoutMs',
  'statefulReconnectBufferSize',
  'statefulReconnectTimeoutMs',
] as const satisfies readonly (keyof HubOptions)[];

describe('resolveHubOptions: defaults', () => {
  it('returns the documented defaults when nothing is given', () => {
    expect(resolveHubOptions()).toEqual({
      keepAliveIntervalMs: 15_000,
      clientTimeoutMs: 30_000,
      handshakeTimeoutMs: 15_000,
      negotiateTimeoutMs: 15_000,
      maximumReceiveMessageSize: 32_768,
      maximumParallelInvocationsPerClient: 1,
      maxQueuedInvocationsPerClient: 128,
      streamBufferCapacity: 10,
      maxStreamsPerClient: 32,
      maxGroupsPerConnection: 1_000,
      maxBufferedBytesPerClient: 1_048_576,
      enableDetailedErrors: false,
      clientResultTimeoutMs: 30_000,
      allowStatefulReconnects: true,
      statefulReconnectBufferSize: 100_000,
      statefulReconnectTimeoutMs: 30_000,
    });
    expect(resolveHubOptions({})).toEqual(DEFAULT_HUB_OPTIONS);
  });

  it('freezes the defaults and returns a fresh object each time', () => {
    expect(Object.isFrozen(DEFAULT_HUB_OPTIONS)).toBe(true);
    const a = resolveHubOptions();
    const b = resolveHubOptions();
    expect(a).not.toBe(b);
    expect(a).not.toBe(DEFAULT_HUB_OPTIONS);
    a.keepAliveIntervalMs = 1;
    expect(DEFAULT_HUB_OPTIONS.keepAliveIntervalMs).toBe(15_000);
  });

  it('merges the given options over the defaults', () => {
    const options = resolveHubOptions({
      keepAliveIntervalMs: 100,
      clientTimeoutMs: 300,
      maximumReceiveMessageSize: 1024,
      enableDetailedErrors: true,
      allowStatefulReconnects: false,
    });
    expect(options).toEqual({
      ...DEFAULT_HUB_OPTIONS,
      keepAliveIntervalMs: 100,
      clientTimeoutMs: 300,
      maximumReceiveMessageSize: 1024,
      enableDetailedErrors: true,
      allowStatefulReconnects: false,
    });
  });

  it('treats undefined values as not given', () => {
    expect(resolveHubOptions({ keepAliveIntervalMs: undefined, handshakeTimeoutMs: undefined })).toEqual(
      DEFAULT_HUB_OPTIONS,
    );
  });
});

describe('resolveHubOptions: invalid values', () => {
  const bad: unknown[] = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60, '100', null, true];

  for (const key of integerOptions) {
    it.each(bad)(`refuses ${key} = %s with ERR_CONFIG naming the option`, (value) => {
      const error = thrown(() => resolveHubOptions({ [key]: value } as Partial<HubOptions>));
      expect(error.code).toBe('ERR_CONFIG');
      expect(error.message).toBe(`Option '${key}' must be a positive integer, got ${String(value)}.`);
    });

    it(`accepts ${key} = 1 and large integers`, () => {
      const relation =
        key === 'keepAliveIntervalMs'
          ? { clientTimeoutMs: 2 ** 41 }
          : key === 'clientTimeoutMs'
            ? { keepAliveIntervalMs: 1 }
            : {};
      const small = key === 'clientTimeoutMs' ? 2 : 1;
      expect(resolveHubOptions({ ...relation, [key]: small })[key]).toBe(small);
      expect(resolveHubOptions({ ...relation, [key]: 2 ** 40 })[key]).toBe(2 ** 40);
    });
  }

  it.each([
    [15_000, 15_000],
    [10_000, 15_000],
    [100, 300],
    [300, 300],
    [1, 2],
  ])('refuses clientTimeoutMs %i <= keepAliveIntervalMs %i', (clientTimeoutMs, keepAliveIntervalMs) => {
    const error = thrown(() => resolveHubOptions({ clientTimeoutMs, keepAliveIntervalMs }));
    expect(error.code).toBe('ERR_CONFIG');
    expect(error.message).toContain(
      `Option 'clientTimeoutMs' (${clientTimeoutMs}) must be greater than 'keepAliveIntervalMs' (${keepAliveIntervalMs}).`,
    );
    expect(error.remedy).toBe('Set clientTimeoutMs to about twice keepAliveIntervalMs.');
    expect(error.message).toContain(error.remedy);
  });

  it('refuses a keepAliveIntervalMs raised past the default client timeout', () => {
    const error = thrown(() => resolveHubOptions({ keepAliveIntervalMs: 30_000 }));
    expect(error.code).toBe('ERR_CONFIG');
    expect(error.message).toMatch(
      /'clientTimeoutMs' \(30000\) must be greater than 'keepAliveIntervalMs' \(30000\)/,
    );
  });

  it('accepts clientTimeoutMs just above keepAliveIntervalMs', () => {
    expect(resolveHubOptions({ keepAliveIntervalMs: 100, clientTimeoutMs: 101 }).clientTimeoutMs).toBe(101);
  });
});

describe('stripUndefined', () => {
  it('drops undefined values only', () => {
    expect(stripUndefined({ a: 1, b: undefined, c: null, d: 0, e: false, f: '' })).toEqual({
      a: 1,
      c: null,
      d: 0,
      e: false,
      f: '',
    });
    expect(Object.keys(stripUndefined({ a: undefined }))).toEqual([]);
  });
});
