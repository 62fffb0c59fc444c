/**
 * Client-caused errors (unknown methods with 32 KB names, arguments a method refuses, protocol
 * violations) must not amplify into logs: nothing at info or above, debug lines truncated and
 * rate-limited per connection; they are counted in the hub's `stats.clientErrors` instead.
 */
import { pino } from 'pino';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { DEMO_HUB_PATH } from '../../src/example/demo-hub.js';
import { openCountingCompletions, record, sendInFrames } from '../helpers/raw-client.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const PER_KIND = 200;
/** Debug lines one connection may write per 10 s window, whatever it sends. */
const MAX_LINES_PER_CONNECTION = 5;
const MAX_LINE_BYTES = 1_024;

describe('client-caused errors in logs', () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('are counted, and logged at debug only, truncated and rate-limited', async () => {
    const lines: { level: number; msg: string; bytes: number }[] = [];
    const logger = pino(
      { level: 'debug' },
      {
        write: (line: string) => {
          const parsed = JSON.parse(line) as { level: number; msg: string };
          lines.push({ level: parsed.level, msg: parsed.msg, bytes: Buffer.byteLength(line) });
        },
      },
    );
    // note: room for the replies, so that only the logs are measured here.
    server = await startServer({ logger, maxBufferedBytesPerClient: 16 * 1024 * 1024 });
    const { ws, completions } = await openCountingCompletions(server.url(DEMO_HUB_PATH));
    const longTarget = 'M'.repeat(32_000);
    const records: string[] = [];
    for (let i = 0; i < PER_KIND; i++) {
      records.push(record({ type: 1, invocationId: `u${i}`, target: longTarget, arguments: [] }));
      records.push(record({ type: 1, invocationId: `a${i}`, target: 'JoinGroup', arguments: [''] }));
    }
    // note: under the 1 MB frame limit: 30 records of ~32 KB at most per frame.
    sendInFrames(ws, records, 30);
    await waitFor(() => completions() === 2 * PER_KIND, { timeoutMs: 10_000 });
    // and one protocol violation, which closes the connection
    ws.send('{"type":1,"target":');
    await waitFor(() => ws.readyState === WebSocket.CLOSED);

    const clientLines = lines.filter((l) => l.msg === 'client error');
    expect(lines.filter((l) => l.level >= 30 && l.msg !== 'hub server listening')).toEqual([]);
    expect(clientLines.length).toBeLessThanOrEqual(MAX_LINES_PER_CONNECTION);
    expect(Math.max(...clientLines.map((l) => l.bytes))).toBeLessThan(MAX_LINE_BYTES);
    const inputBytes = records.reduce((sum, r) => sum + r.length, 0);
    const logBytes = lines.reduce((sum, l) => sum + l.bytes, 0);
    expect(logBytes).toBeLessThan(inputBytes / 1_000);
    const stats = server.server.hub(DEMO_HUB_PATH).stats.clientErrors;
    expect(stats).toMatchObject({ unknownMethod: PER_KIND, invalidArguments: PER_KIND, protocol: 1 });
  });
});
