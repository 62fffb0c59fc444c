import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('../fixtures/memory-instance.mjs', import.meta.url));

export interface Heap {
  heapUsed: number;
  rss: number;
}

export interface MemoryInstance {
  /** `http://127.0.0.1:<port>` */
  readonly base: string;
  /** The instance's heap after a full GC, and its RSS. */
  heap(): Promise<Heap>;
  kill(): void;
}

/**
 * Starts test/fixtures/memory-instance.mjs with `--expose-gc` (needs `npm run build`), so that memory
 * figures are the server's own and not the test runner's.
 */
export async function startMemoryInstance(args: string[]): Promise<MemoryInstance> {
  const child: ChildProcess = spawn(process.execPath, ['--expose-gc', FIXTURE, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`memory instance exited with ${code}`)));
    child.stdout?.on('data', (chunk: Buffer) => {
      const match = /listening on port (\d+)/.exec(chunk.toString('utf8'));
      if (match) resolve(Number(match[1]));
    });
  });
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    heap: async () => (await (await fetch(`${base}/__heap`)).json()) as Heap,
    kill: () => child.kill('SIGKILL'),
  };
}

export const mb = (bytes: number): string => (bytes / 1024 / 1024).toFixed(1);
