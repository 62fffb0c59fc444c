/**
 * A private local Redis Cluster for tests: 3 primaries + 3 replicas (`cluster-enabled yes`), on ports found
 * free, in temporary directories, persisting nothing, with a short `cluster-node-timeout` so that a
 * failover takes about a second. Never the shared Redis at 6379. Start one per test file (beforeAll) and
 * dispose of it in afterAll; a test worker that exits kills the nodes anyway.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe } from 'vitest';
import type { RedisTarget } from '../../src/redis/connection.js';
import { REDIS_URL, deletePrefix as deleteKeys } from './redis.js';
import { createServer } from 'node:net';

const run = promisify(execFile);
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** How long a node may be unreachable before its replica takes over. */
export const CLUSTER_NODE_TIMEOUT_MS = 1_000;

export interface ClusterNode {
  readonly port: number;
  readonly url: string;
  /** The node's cluster id. */
  id: string;
  alive: boolean;
}

export interface RedisClusterOptions {
  /** @default 3 */
  primaries?: number;
  /** Replicas per primary. @default 1 */
  replicas?: number;
}

/**
 * A port whose cluster bus port (+10000) is free too, both below the kernel's ephemeral range (32768+ on
 * Linux): ports handed out by `listen(0)` or taken by outgoing connections of a busy test run (thousands of
 * client sockets) then never collide with a node's port or bus port between the probe and the bind.
 */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = CLUSTER_PORT_MIN + Math.floor(Math.random() * (CLUSTER_PORT_MAX - CLUSTER_PORT_MIN));
    if (taken.has(port) || taken.has(port + 10_000) || taken.has(port - 10_000)) continue;
    if (!(await portFree(port)) || !(await portFree(port + 10_000))) continue;
    taken.add(port);
    return port;
  }
  throw new Error('No free port pair for a cluster node.');
}

const CLUSTER_PORT_MIN = 10_000;
/** The bus port (port + 10000) stays below 32768. */
const CLUSTER_PORT_MAX = 22_700;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export class RedisCluster {
  readonly nodes: ClusterNode[] = [];
  readonly #children = new Map<number, ChildProcess>();
  readonly #dir: string;

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /** Starts the nodes, creates the cluster and waits until every slot is served and replicas are in sync. */
  static async start(options: RedisClusterOptions = {}): Promise<RedisCluster> {
    const primaries = options.primaries ?? 3;
    const replicas = options.replicas ?? 1;
    const cluster = new RedisCluster(await mkdtemp(join(tmpdir(), 'relayhub-cluster-')));
    try {
      const taken = new Set<number>();
      const ports = await Promise.all(
        Array.from({ length: primaries * (1 + replicas) }, () => cluster.#spawnOnFreePort(taken)),
      );
      await run(
        'redis-cli',
        [
          '--cluster',
          'create',
          ...ports.map((p) => `127.0.0.1:${p}`),
          '--cluster-replicas',
          String(replicas),
          '--cluster-yes',
        ],
        { timeout: 30_000 },
      );
      await cluster.waitUntilHealthy();
      return cluster;
    } catch (error) {
      await cluster.dispose();
      throw error;
    }
  }

  /** Seed URLs (every node), as `REDIS_URL` takes them with `--redis-cluster`. */
  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /**
   * Starts a node on a port found free; when it does not come up (another process took the port or its
   * bus port meanwhile, which happens on a busy machine), tries again on another port.
   */
  async #spawnOnFreePort(taken: Set<number>): Promise<number> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await clusterPort(taken);
      try {
        await this.#spawn(port);
        return port;
      } catch (error) {
        lastError = error;
        this.#forget(port);
      }
    }
    throw lastError;
  }

  #forget(port: number): void {
    this.#children.get(port)?.kill('SIGKILL');
    this.#children.delete(port);
    const index = this.nodes.findIndex((n) => n.port === port);
    if (index >= 0) this.nodes.splice(index, 1);
  }

  async #spawn(port: number): Promise<void> {
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', () => {
        for (const child of running) child.kill('SIGKILL');
      });
    }
    const dir = join(this.#dir, String(port));
    await run('mkdir', ['-p', dir]);
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        String(CLUSTER_NODE_TIMEOUT_MS),
        // note: any replica may take over, however stale it is (tests kill primaries on purpose).
        '--cluster-replica-validity-factor',
        '0',
        '--cluster-require-full-coverage',
        'no',
        '--save',
        '',
        '--appendonly',
        'no',
        '--repl-diskless-sync',
        'yes',
        '--repl-diskless-sync-delay',
        '0',
        '--dir',
        dir,
      ],
      { cwd: dir, stdio: 'ignore' },
    );
    running.add(child);
    this.#children.set(port, child);
    child.once('exit', () => running.delete(child));
    const node: ClusterNode = { port, url: `redis://127.0.0.1:${port}`, id: '', alive: true };
    this.nodes.push(node);
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`cluster node on ${port} exited at start (port taken?)`);
      }
      try {
        node.id = (await this.#command(port, ['CLUSTER', 'MYID'])).trim();
        if (node.id) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`cluster node on ${port} did not start`);
      await new Promise((r) => setTimeout(r, 30));
    }
  }

  async #command(port: number, args: string[]): Promise<string> {
    const { stdout } = await run('redis-cli', ['-p', String(port), ...args], { timeout: 5_000 });
    return stdout;
  }

  /** Opens a plain connection to one node (the caller disconnects it). */
  connect(node: ClusterNode): Redis {
    const redis = new Redis(node.port, '127.0.0.1', { maxRetriesPerRequest: 1, lazyConnect: false });
    redis.on('error', () => undefined);
    return redis;
  }

  /** Runs a command on one node and returns its raw reply. */
  async call(node: ClusterNode, ...args: (string | number)[]): Promise<unknown> {
    const redis = this.connect(node);
    try {
      return await redis.call(String(args[0]), ...args.slice(1).map(String));
    } finally {
      redis.disconnect();
    }
  }

  /** The live primaries, each with its replicas in sync, and every slot served: cluster_state ok everywhere. */
  async waitUntilHealthy(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let ok = true;
      for (const node of this.nodes.filter((n) => n.alive)) {
        const info = String(await this.call(node, 'CLUSTER', 'INFO').catch(() => ''));
        if (!info.includes('cluster_state:ok')) ok = false;
        const replication = String(await this.call(node, 'INFO', 'replication').catch(() => ''));
        if (replication.includes('role:slave') && !replication.includes('master_link_status:up')) ok = false;
      }
      if (ok && (await this.#everyNodeAgrees())) return;
      if (Date.now() > deadline) throw new Error('the Redis Cluster did not become healthy');
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Every live node sees the same primary for slot 0 and every live primary has its slots. */
  async #everyNodeAgrees(): Promise<boolean> {
    const views = await Promise.all(
      this.nodes.filter((n) => n.alive).map((n) => this.call(n, 'CLUSTER', 'SLOTS').catch(() => [])),
    );
    const signature = (slots: unknown) =>
      JSON.stringify(
        (slots as [number, number, [string, number]][])
          .map(([from, to, primary]) => [from, to, primary[1]])
          .sort((a, b) => Number(a[0]) - Number(b[0])),
      );
    const first = signature(views[0]);
    return views.every((v) => signature(v) === first);
  }

  /** The cluster slot of a key or channel (hashtags respected). */
  async slotOf(key: string): Promise<number> {
    return Number(await this.call(this.#anyAlive(), 'CLUSTER', 'KEYSLOT', key));
  }

  /** The node serving a slot as primary right now. */
  async primaryOf(slot: number): Promise<ClusterNode> {
    const slots = (await this.call(this.#anyAlive(), 'CLUSTER', 'SLOTS')) as [
      number,
      number,
      [string, number],
    ][];
    const range = slots.find(([from, to]) => slot >= from && slot <= to);
    const port = range?.[2][1];
    const node = this.nodes.find((n) => n.port === port);
    if (!node) throw new Error(`no primary serves slot ${slot}`);
    return node;
  }

  /** The live primaries. */
  async primaries(): Promise<ClusterNode[]> {
    const slots = (await this.call(this.#anyAlive(), 'CLUSTER', 'SLOTS')) as [
      number,
      number,
      [string, number],
    ][];
    const ports = new Set(slots.map((s) => s[2][1]));
    return this.nodes.filter((n) => ports.has(n.port));
  }

  #anyAlive(): ClusterNode {
    const node = this.nodes.find((n) => n.alive);
    if (!node) throw new Error('no node is alive');
    return node;
  }

  /** SIGKILLs a node (a primary: its replica takes over after the node timeout). */
  kill(node: ClusterNode): void {
    node.alive = false;
    this.#children.get(node.port)?.kill('SIGKILL');
  }

  /**
   * Starts a killed node again on its port and directory: it reads its cluster config and rejoins, empty,
   * as a replica of the primary that took over from it. Resolves once it is in sync.
   */
  async restart(node: ClusterNode): Promise<void> {
    if (node.alive) return;
    this.nodes.splice(this.nodes.indexOf(node), 1);
    await this.#spawn(node.port);
    const back = this.nodes.find((n) => n.port === node.port) as ClusterNode;
    this.nodes.splice(this.nodes.indexOf(back), 1);
    node.alive = true;
    this.nodes.push(node);
    await this.waitUntilHealthy();
  }

  /** Waits until another node serves `slot` as primary (after {@link kill} of its primary). */
  async waitForFailover(slot: number, from: ClusterNode, timeoutMs = 15_000): Promise<ClusterNode> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const primary = await this.primaryOf(slot);
        if (primary !== from && primary.alive) {
          const info = String(await this.call(primary, 'CLUSTER', 'INFO'));
          if (info.includes('cluster_state:ok')) return primary;
        }
      } catch {
        // the view is changing
      }
      if (Date.now() > deadline) throw new Error(`no failover of slot ${slot} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Moves one slot (and its keys) from its primary to another primary, the way `redis-cli --cluster
   * reshard` does: IMPORTING / MIGRATING, MIGRATE the keys, then SETSLOT NODE on every primary.
   */
  async moveSlot(slot: number, to: ClusterNode): Promise<void> {
    const from = await this.primaryOf(slot);
    if (from === to) return;
    await this.call(to, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
    await this.call(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
    for (;;) {
      const keys = (await this.call(from, 'CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
      if (keys.length === 0) break;
      await this.call(from, 'MIGRATE', '127.0.0.1', to.port, '', 0, 5_000, 'KEYS', ...keys);
    }
    for (const node of await this.primaries()) {
      await this.call(node, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
    }
  }

  /** Kills every node and removes the directories. Idempotent. */
  async dispose(): Promise<void> {
    const exits = [...this.#children.values()].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    );
    await Promise.all(exits);
    this.#children.clear();
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/** Starts a private Redis Cluster; see {@link RedisCluster}. */
export const startRedisCluster = (options?: RedisClusterOptions): Promise<RedisCluster> =>
  RedisCluster.start(options);

/** Where a test's Redis is: the shared one (under a unique prefix), or a private Redis Cluster. */
export interface RedisMedium {
  readonly name: string;
  /** `--redis-url` of the instances (a comma-separated seed list on a Cluster). */
  readonly url: string;
  /** Their extra flags (`--redis-cluster`). */
  readonly args: string[];
  /** For the producers and backplanes of the test process. */
  readonly redis: RedisTarget;
  /** Deletes one test's keys (a private cluster is thrown away with its keys instead). */
  cleanup(prefix: string): Promise<void>;
}

const SHARED_REDIS: RedisMedium = {
  name: 'one Redis',
  url: REDIS_URL,
  args: [],
  redis: { url: REDIS_URL },
  cleanup: (prefix) => deleteKeys(REDIS_URL, prefix),
};

/**
 * Runs a suite on the shared Redis, then again on a private Redis Cluster (3 primaries + 3
 * replicas, started once for the file) with the instances on `--redis-cluster`.
 */
export function onOneRedisAndCluster(suite: (medium: () => RedisMedium, where: string) => void): void {
  suite(() => SHARED_REDIS, SHARED_REDIS.name);
  describe('on Redis Cluster', () => {
    let cluster: RedisCluster | undefined;
    beforeAll(async () => {
      cluster = await startRedisCluster();
    }, 60_000);
    afterAll(() => cluster?.dispose());
    const medium = (): RedisMedium => {
      const urls = (cluster as RedisCluster).urls;
      return {
        name: 'Redis Cluster',
        url: urls.join(','),
        args: ['--redis-cluster'],
        redis: { cluster: urls },
        cleanup: async () => undefined,
      };
    };
    suite(medium, 'Redis Cluster');
  });
}
