// Negotiate: throughput and heap per pending negotiate, signed v1 tokens (nothing kept on the instance)
// against the baseline measured in the same run, v0 negotiates (a pending connection kept per instance,
// which is what every negotiate cost before connection tokens were signed).
// Each mode runs against its own server process (node --expose-gc, the demo hub, negotiateTimeoutMs 10 min
// so that nothing expires while measured): a warm-up, then NEGOTIATES requests at CONCURRENCY, then the
// heap after a full GC, compared with the heap before.
// Usage: npm run build && node bench/negotiate.mjs [--negotiates 20000] [--concurrency 64]
// Prints one line per mode and `RESULT {...}` (negotiates/s and bytes of heap per pending negotiate).
import './help.mjs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    serve: { type: 'boolean', default: false },
    negotiates: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '64' },
  },
});

if (values.serve) {
  const { HubServer, DEMO_HUB_PATH, demoHub } = await import('../dist/index.js');
  const { pino } = await import('pino');
  const heap = () => {
    for (let i = 0; i < 3; i++) globalThis.gc();
    return process.memoryUsage().heapUsed;
  };
  const server = new HubServer({
    logger: pino({ level: 'warn' }),
    negotiateTimeoutMs: 600_000,
    maxConnectionsPerAddress: 0,
    fallback: (req, res) => res.writeHead(200).end(String(heap())),
  });
  server.mapHub(DEMO_HUB_PATH, demoHub);
  const { port } = await server.listen(0, '127.0.0.1');
  process.stdout.write(`listening ${port}\n`);
  process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
} else {
  const total = Number(values.negotiates);
  const concurrency = Number(values.concurrency);

  const startServer = () =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--serve'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      child.stdout.on('data', (chunk) => {
        const match = /listening (\d+)/.exec(chunk.toString());
        if (match) resolve({ child, base: `http://127.0.0.1:${match[1]}` });
      });
      child.once('exit', (code) => reject(new Error(`the server exited (${code})`)));
    });

  const burst = async (base, query, count) => {
    let next = 0;
    const worker = async () => {
      while (next < count) {
        next++;
        const res = await fetch(`${base}/hubs/demo/negotiate${query}`, { method: 'POST' });
        if (res.status !== 200) throw new Error(`negotiate answered ${res.status}`);
        await res.arrayBuffer();
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  };

  const measure = async (label, query) => {
    const { child, base } = await startServer();
    const heap = async () => Number(await (await fetch(`${base}/__heap`)).text());
    try {
      await burst(base, query, 2_000);
      const before = await heap();
      const started = process.hrtime.bigint();
      await burst(base, query, total);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const after = await heap();
      const perSec = Math.round(total / seconds);
      // note: the warm-up's pending negotiates are in both figures; only the measured ones count.
      const bytesPerPending = Math.max(0, Math.round((after - before) / total));
      console.log(
        `${label.padEnd(34)} ${String(perSec).padStart(8)} negotiates/s  ${String(bytesPerPending).padStart(6)} B heap per pending`,
      );
      return { perSec, bytesPerPending };
    } finally {
      child.kill('SIGTERM');
    }
  };

  const baseline = await measure('v0 (pending connection kept)', '');
  const signed = await measure('v1 (signed token, nothing kept)', '?negotiateVersion=1');
  const ratio = +(signed.perSec / baseline.perSec).toFixed(2);
  console.log(`throughput ratio v1/v0 ${ratio}x (the client shares the machine: see the load average)`);
  console.log(
    `RESULT ${JSON.stringify({
      negotiates: total,
      concurrency,
      v1PerSec: signed.perSec,
      v0BaselinePerSec: baseline.perSec,
      ratio,
      v1BytesPerPending: signed.bytesPerPending,
      v0BytesPerPending: baseline.bytesPerPending,
    })}`,
  );
}
