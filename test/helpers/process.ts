/**
 * Hub instances as separate OS processes, for tests that need real multi-process scale-out: the
 * `relayhub serve` CLI (demo hub), or the fixture script `test/fixtures/api-hub-instance.mjs` (a hub with
 * one method per server API proxy). Both print `relayhub listening on port N` once they listen; the
 * helpers wait for that line (bounded) and report the process output when it never comes.
 *
 * Both run from `dist/`: run `npm run build` first (`npm test` does).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TEST_JWT_SECRET } from './server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI_PATH = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
export const API_HUB_FIXTURE = fileURLToPath(new URL('../fixtures/api-hub-instance.mjs', import.meta.url));
/** Where the fixture mounts its hub. */
export const API_HUB_PATH = '/hubs/api';

const LISTENING = /relayhub listening on port (\d+)/;
const MAX_OUTPUT_CHARS = 200_000;

export interface InstanceOptions {
  redisUrl: string;
  channelPrefix: string;
  /** @default a random id chosen by the instance */
  instanceId?: string;
  /** `--backplane` of `relayhub serve` (the API fixture serves `pubsub` only). @default 'pubsub' */
  backplane?: 'memory' | 'pubsub' | 'streams';
  /** @default TEST_JWT_SECRET */
  jwtSecret?: string;
  /** Extra environment variables (LOG_LEVEL defaults to `warn`). */
  env?: Record<string, string>;
  /** Extra command-line arguments. */
  args?: string[];
  /** How long to wait for the listening line. @default 15_000 */
  startTimeoutMs?: number;
  /** `--database-url` (the Postgres of the orders API that `relayhub serve --backplane streams` mounts). */
  databaseUrl?: string;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface InstanceProcess {
  readonly pid: number;
  readonly port: number;
  /** `http://127.0.0.1:<port><path>`; `path` defaults to the hub the process serves. */
  url(path?: string): string;
  /** Sends a signal (no-op once the process has exited). */
  kill(signal?: NodeJS.Signals): void;
  /** SIGTERM, waits for the exit, SIGKILL after `graceMs` (default 5 s). Idempotent. */
  stop(graceMs?: number): Promise<ExitStatus>;
  /** Settles when the process exits. */
  readonly exited: Promise<ExitStatus>;
  readonly hasExited: boolean;
  /** stdout and stderr so far, interleaved. */
  output(): string;
}

/** Every process the helpers started and that has not exited: killed if the test worker exits. */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}

function requireDist(path: string): void {
  if (!existsSync(path)) {
    throw new Error(`${path} does not exist: run \`npm run build\` before tests that spawn instances.`);
  }
}

/** `relayhub serve` (the demo hub at /hubs/demo; `--backplane pubsub` by default) as a separate process. */
export function startInstance(options: InstanceOptions): Promise<InstanceProcess> {
  requireDist(CLI_PATH);
  return spawnInstance([CLI_PATH, 'serve', ...commonArgs(options)], options, '/hubs/demo');
}

/** The API fixture hub (at {@link API_HUB_PATH}) on the pubsub backplane, as a separate process. */
export function startFixtureInstance(options: InstanceOptions): Promise<InstanceProcess> {
  requireDist(fileURLToPath(new URL('../../dist/index.js', import.meta.url)));
  return spawnInstance([API_HUB_FIXTURE, ...commonArgs(options)], options, API_HUB_PATH);
}

function commonArgs(options: InstanceOptions): string[] {
  return [
    '--port',
    '0',
    '--host',
    '127.0.0.1',
    '--backplane',
    options.backplane ?? 'pubsub',
    '--redis-url',
    options.redisUrl,
    '--channel-prefix',
    options.channelPrefix,
    '--jwt-secret',
    options.jwtSecret ?? TEST_JWT_SECRET,
    ...(options.instanceId ? ['--instance-id', options.instanceId] : []),
    ...(options.databaseUrl ? ['--database-url', options.databaseUrl] : []),
    ...(options.args ?? []),
  ];
}

function spawnInstance(
  argv: string[],
  options: InstanceOptions,
  defaultPath: string,
  ready: RegExp = LISTENING,
): Promise<InstanceProcess> {
  installExitHook();
  const startTimeoutMs = options.startTimeoutMs ?? 15_000;
  const child = spawn(process.execPath, argv, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      // note: the CLI reads these too; the flags win, but do not let the test runner's values leak in.
      PORT: '0',
      LOG_LEVEL: 'warn',
      ...options.env,
    },
  });
  running.add(child);
  let log = '';
  let exitStatus: ExitStatus | undefined;
  const append = (chunk: Buffer) => {
    log += chunk.toString('utf8');
    if (log.length > MAX_OUTPUT_CHARS) log = log.slice(-MAX_OUTPUT_CHARS);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      exitStatus = { code, signal };
      resolve(exitStatus);
    });
  });
  const describeExit = (status: ExitStatus) =>
    status.signal ? `was killed by ${status.signal}` : `exited with code ${status.code}`;
  const withOutput = (message: string) =>
    new Error(`${message}\n--- ${argv.join(' ')} output ---\n${log.trim() || '(none)'}\n---`);

  const kill = (signal: NodeJS.Signals = 'SIGTERM') => {
    if (exitStatus === undefined) child.kill(signal);
  };
  let stopping: Promise<ExitStatus> | undefined;
  const stop = (graceMs = 5_000): Promise<ExitStatus> => {
    stopping ??= (async () => {
      if (exitStatus) return exitStatus;
      kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), graceMs);
      });
      const first = await Promise.race([exited, late]);
      clearTimeout(timer);
      if (first !== 'late') return first;
      kill('SIGKILL');
      return exited;
    })();
    return stopping;
  };

  return new Promise<InstanceProcess>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      cleanup();
      kill('SIGKILL');
      reject(withOutput(`The instance did not print its listening line within ${startTimeoutMs} ms.`));
    }, startTimeoutMs);
    const onData = () => {
      const match = ready.exec(log);
      if (!match || settled) return;
      settled = true;
      cleanup();
      const port = Number(match[1]);
      resolve({
        pid: child.pid as number,
        port,
        url: (path = defaultPath) => `http://127.0.0.1:${port}${path}`,
        kill,
        stop,
        exited,
        get hasExited() {
          return exitStatus !== undefined;
        },
        output: () => log,
      });
    };
    const onEarlyExit = (status: ExitStatus) => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(withOutput(`The instance ${describeExit(status)} before it listened.`));
    };
    const onSpawnError = (error: Error) => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(withOutput(`Could not start the instance: ${error.message}`));
    };
    function cleanup() {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
    }
    child.stdout?.on('data', onData);
    child.once('error', onSpawnError);
    void exited.then(onEarlyExit);
  });
}

/** Collects instance processes so that a test can stop all of them in afterEach/afterAll. */
export class InstancePool {
  readonly #instances: InstanceProcess[] = [];
  readonly #workers: WorkerProcess[] = [];

  async start(options: InstanceOptions): Promise<InstanceProcess> {
    return this.add(await startInstance(options));
  }

  async startFixture(options: InstanceOptions): Promise<InstanceProcess> {
    return this.add(await startFixtureInstance(options));
  }

  /** Starts a `relayhub worker` process (see {@link startWorkerProcess}); stopAll stops it too. */
  async startWorker(options: WorkerProcessOptions): Promise<WorkerProcess> {
    const worker = await startWorkerProcess(options);
    this.#workers.push(worker);
    return worker;
  }

  add(instance: InstanceProcess): InstanceProcess {
    this.#instances.push(instance);
    return instance;
  }

  /** Stops every instance (SIGTERM, then SIGKILL after a bound). */
  async stopAll(): Promise<void> {
    await Promise.allSettled([...this.#instances.splice(0), ...this.#workers.splice(0)].map((i) => i.stop()));
  }
}

const WORKER_STARTED = /relayhub worker (\S+) started/;

export interface WorkerProcessOptions {
  redisUrl: string;
  channelPrefix: string;
  /** The outbox's Postgres (a test schema's `databaseUrl`). */
  databaseUrl: string;
  /** `--hub`. @default '/hubs/demo' */
  hub?: string;
  /** `--instance-id`, the worker id. @default a random id chosen by the worker */
  instanceId?: string;
  /** `--migrate`. @default false */
  migrate?: boolean;
  /** Extra environment variables (LOG_LEVEL defaults to `warn`). */
  env?: Record<string, string>;
  /** Extra command-line arguments. */
  args?: string[];
  /** How long to wait for the started line. @default 15_000 */
  startTimeoutMs?: number;
}

/** A `relayhub worker` process: an {@link InstanceProcess} without port, with the id it printed. */
export interface WorkerProcess extends Omit<InstanceProcess, 'port' | 'url'> {
  readonly workerId: string;
}

/**
 * `relayhub worker` (the outbox worker) as a separate process; resolves once it printed
 * `relayhub worker <id> started` (it has connected to Postgres and Redis and begun relaying).
 */
export async function startWorkerProcess(options: WorkerProcessOptions): Promise<WorkerProcess> {
  requireDist(CLI_PATH);
  const argv = [
    CLI_PATH,
    'worker',
    '--redis-url',
    options.redisUrl,
    '--database-url',
    options.databaseUrl,
    '--channel-prefix',
    options.channelPrefix,
    '--hub',
    options.hub ?? '/hubs/demo',
    ...(options.instanceId ? ['--instance-id', options.instanceId] : []),
    ...(options.migrate ? ['--migrate'] : []),
    ...(options.args ?? []),
  ];
  const child = await spawnInstance(argv, options, '', WORKER_STARTED);
  const workerId = WORKER_STARTED.exec(child.output())?.[1] ?? '';
  return {
    pid: child.pid,
    workerId,
    kill: child.kill,
    stop: child.stop,
    exited: child.exited,
    get hasExited() {
      return child.hasExited;
    },
    output: child.output,
  };
}
