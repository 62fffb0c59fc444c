/**
 * A private `redis-server` for chaos tests, which stop and restart Redis: never the shared Redis at 6379.
 * It listens on 127.0.0.1 on a port found free, persists nothing (`--save "" --appendonly no`) and runs in
 * a temporary directory, so that a restart on the same port comes back empty (or, created with
 * `{ persist: true }`, with its data: `--appendonly yes`, written out at its SIGTERM). Dispose of it in
 * afterAll/afterEach; a worker that exits kills it anyway.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** A port nobody listens on right now (listen on port 0, read it, close). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves true when a PING on `port` answers PONG within `timeoutMs`. */
function ping(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' });
    let reply = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('utf8');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
  });
}

export class RedisServer {
  readonly port: number;
  readonly #dir: string;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #log = '';

  private constructor(
    port: number,
    dir: string,
    private readonly persist: boolean,
  ) {
    this.port = port;
    this.#dir = dir;
  }

  /**
   * Starts a private redis-server on a free port (tries a few ports if one is taken meanwhile). `persist`:
   * an append-only file keeps its data across {@link stop} and {@link start}.
   */
  static async create({ persist = false }: { persist?: boolean } = {}): Promise<RedisServer> {
    const dir = await mkdtemp(join(tmpdir(), 'relayhub-redis-'));
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const server = new RedisServer(await freePort(), dir, persist);
      try {
        await server.start();
        return server;
      } catch (error) {
        lastError = error;
        await server.stop();
      }
    }
    await rm(dir, { recursive: true, force: true });
    throw lastError;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Output of the current (or last) redis-server process. */
  output(): string {
    return this.#log;
  }

  /** Starts redis-server on {@link port} (again: empty unless `persist`) and resolves once it answers PING. */
  async start(timeoutMs = 5_000): Promise<void> {
    if (this.#child) return;
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', () => {
        for (const child of running) child.kill('SIGKILL');
      });
    }
    this.#log = '';
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        this.persist ? 'yes' : 'no',
        '--dir',
        this.#dir,
      ],
      { cwd: this.#dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    running.add(child);
    this.#child = child;
    let exitedEarly = false;
    let spawnError: Error | undefined;
    child.stdout?.on('data', (chunk: Buffer) => (this.#log += chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => (this.#log += chunk.toString('utf8')));
    child.once('error', (error) => (spawnError = error));
    this.#exited = new Promise<void>((resolve) => {
      const onGone = () => {
        running.delete(child);
        if (this.#child === child) this.#child = undefined;
        exitedEarly = true;
        resolve();
      };
      child.once('exit', onGone);
      child.once('error', onGone);
    });
    const deadline = Date.now() + timeoutMs;
    while (!(await ping(this.port))) {
      if (spawnError) throw new Error(`Could not start redis-server: ${spawnError.message}`);
      if (exitedEarly) throw new Error(`redis-server on port ${this.port} exited at start:\n${this.#log}`);
      if (Date.now() > deadline) {
        throw new Error(
          `redis-server on port ${this.port} did not answer PING within ${timeoutMs} ms:\n${this.#log}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /**
   * Stops redis-server (SIGTERM: with nothing to save it shuts down at once, closing every client
   * connection), waits for its exit, and SIGKILLs it after `graceMs`. Idempotent.
   */
  async stop(graceMs = 3_000): Promise<void> {
    const child = this.#child;
    if (!child) return;
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), graceMs);
    });
    const first = await Promise.race([this.#exited.then(() => 'exited' as const), late]);
    clearTimeout(timer);
    if (first === 'late') {
      child.kill('SIGKILL');
      await this.#exited;
    }
  }

  /**
   * Freezes redis-server (SIGSTOP): connections stay open and accept bytes, but nothing is answered, as
   * when Redis hangs or the network black-holes traffic. {@link resume} thaws it.
   */
  pause(): void {
    this.#child?.kill('SIGSTOP');
  }

  resume(): void {
    this.#child?.kill('SIGCONT');
  }

  /** Stops the server and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/** Starts a private redis-server on a free port; see {@link RedisServer}. */
export const startRedisServer = (options: { persist?: boolean } = {}): Promise<RedisServer> =>
  RedisServer.create(options);
