import { afterEach, describe, expect, it } from 'vitest';
import { isRelayhubError, type RelayhubError } from '../../src/errors.js';
import type { HubDefinition } from '../../src/hub/hub.js';
import { ClientPool } from '../helpers/client.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const HUB = '/hubs/client-results-test';

const hub: HubDefinition = {
  methods: {
    /** Asks the caller for a result from inside a hub method and returns it doubled. */
    AskMe: async (ctx, question: number) => {
      const answer = await ctx.clients.caller.invoke<number>('getAnswer', question);
      return answer * 2;
    },
    /** Asks another connection. */
    AskOther: (ctx, connectionId: string, question: number) =>
      ctx.clients.client(connectionId).invoke('getAnswer', question),
    Echo: (_ctx, value: unknown) => value,
  },
};

async function rejection(promise: Promise<unknown>): Promise<RelayhubError> {
  const error = await promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (e: unknown) => e,
  );
  if (!isRelayhubError(error)) throw new Error(`expected a RelayhubError, got ${String(error)}`);
  return error;
}

describe('client results', () => {
  const clients = new ClientPool();
  let server: TestServer | undefined;

  afterEach(async () => {
    await clients.stopAll();
    await server?.close();
    server = undefined;
  });

  it("resolves with the client handler's return value", async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const asked: unknown[][] = [];
    c.on('getAnswer', (...args: unknown[]) => {
      asked.push(args);
      return (args[0] as number) + 41;
    });
    const clientsApi = server.server.hub(HUB).clients;
    expect(await clientsApi.client(c.connectionId as string).invoke('getAnswer', 1)).toBe(42);
    expect(asked).toEqual([[1]]);
  });

  it('resolves with a value from an async handler, and with falsy values', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const answers: unknown[] = [{ nested: [1, 2] }, 0, false, null, ''];
    let next = 0;
    c.on('getAnswer', async () => {
      await new Promise((resolve) => setImmediate(resolve));
      return answers[next++];
    });
    const proxy = server.server.hub(HUB).clients.client(c.connectionId as string);
    for (const expected of answers) expect(await proxy.invoke('getAnswer')).toEqual(expected);
  });

  it('keeps concurrent client results apart', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    c.on('getAnswer', async (n: number) => {
      // note: answer in reverse order of arrival.
      await new Promise((resolve) => setTimeout(resolve, 50 - n * 5));
      return n * 10;
    });
    const proxy = server.server.hub(HUB).clients.client(c.connectionId as string);
    const answers = await Promise.all([1, 2, 3, 4, 5].map((n) => proxy.invoke('getAnswer', n)));
    expect(answers).toEqual([10, 20, 30, 40, 50]);
  });

  it("rejects with ERR_CLIENT_RESULT carrying the client's error when the handler throws", async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    c.on('getAnswer', () => {
      throw new Error('no idea, sorry');
    });
    const error = await rejection(
      server.server
        .hub(HUB)
        .clients.client(c.connectionId as string)
        .invoke('getAnswer', 1),
    );
    expect(error.code).toBe('ERR_CLIENT_RESULT');
    // note: exactly what the official client sends (`${error}`), as SignalR's InvokeAsync throws it.
    expect(error.message).toBe('Error: no idea, sorry');
  });

  it('rejects with ERR_CLIENT_RESULT when the client has no handler', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    const error = await rejection(
      server.server
        .hub(HUB)
        .clients.client(c.connectionId as string)
        .invoke('getAnswer', 1),
    );
    expect(error.code).toBe('ERR_CLIENT_RESULT');
    expect(error.message).toBe("Client didn't provide a result.");
    // note: the connection is fine afterwards.
    expect(await c.invoke('Echo', 'ok')).toBe('ok');
  });

  it('rejects with ERR_INVOCATION_TIMEOUT when the client does not answer in time', async () => {
    server = await startServer({ clientResultTimeoutMs: 150 }, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    let called = 0;
    c.on('getAnswer', () => {
      called++;
      return new Promise<never>(() => {});
    });
    const started = Date.now();
    const error = await rejection(
      server.server
        .hub(HUB)
        .clients.client(c.connectionId as string)
        .invoke('getAnswer', 1),
    );
    expect(error.code).toBe('ERR_INVOCATION_TIMEOUT');
    expect(called).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('rejects with ERR_CONNECTION_CLOSED when the client disconnects while the result is pending', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    let called = 0;
    c.on('getAnswer', () => {
      called++;
      return new Promise<never>(() => {});
    });
    const pending = rejection(
      server.server
        .hub(HUB)
        .clients.client(c.connectionId as string)
        .invoke('getAnswer', 1),
    );
    await waitFor(() => called === 1);
    await c.stop();
    const error = await pending;
    expect(error.code).toBe('ERR_CONNECTION_CLOSED');
  });

  it('rejects with ERR_CONNECTION_NOT_FOUND for an unknown connection', async () => {
    server = await startServer({}, { [HUB]: hub });
    const error = await rejection(server.server.hub(HUB).clients.client('no-such-connection').invoke('x'));
    expect(error.code).toBe('ERR_CONNECTION_NOT_FOUND');
  });

  it('works from inside a hub method with one invocation slot per client (the default)', async () => {
    server = await startServer({}, { [HUB]: hub });
    const c = await clients.connect(server.url(HUB));
    c.on('getAnswer', (n: number) => n + 1);
    expect(await c.invoke('AskMe', 20)).toBe(42);
    expect(await c.invoke('AskMe', 1)).toBe(4);
  });

  it("asks another connection from a hub method and passes on the other client's error", async () => {
    server = await startServer({ enableDetailedErrors: true }, { [HUB]: hub });
    const asker = await clients.connect(server.url(HUB));
    const answerer = await clients.connect(server.url(HUB));
    answerer.on('getAnswer', (n: number) => {
      if (n < 0) throw new Error('negative questions are rude');
      return `answer to ${n}`;
    });
    expect(await asker.invoke('AskOther', answerer.connectionId, 7)).toBe('answer to 7');
    await expect(asker.invoke('AskOther', answerer.connectionId, -1)).rejects.toThrow(
      'negative questions are rude',
    );
  });
});
