/**
 * The shipped nginx configs: both pass `nginx -t` (on a copy with local paths, ports and upstreams), and
 * deploy/nginx-no-affinity.conf, run for real on loopback in front of two `relayhub serve` processes,
 * load-balances round-robin while official clients connect through negotiate (WebSockets) and exchange
 * messages across the instances. Needs /usr/sbin/nginx (`.ci/run` installs it).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { HttpTransportType, type HubConnection } from '@microsoft/signalr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePortRange } from '../helpers/cli.js';
import { buildClient, ClientPool } from '../helpers/client.js';
import { InstancePool, type InstanceProcess } from '../helpers/process.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const NGINX = '/usr/sbin/nginx';
const HAS_NGINX = existsSync(NGINX);
const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
const run = promisify(execFile);

if (!HAS_NGINX)
  console.warn(`Skipping the nginx config tests: ${NGINX} is not installed (.ci/run installs it).`);

/** Rewrites `text`, failing when `pattern` does not occur (so that a changed config cannot dodge the test). */
function must(text: string, pattern: RegExp, replacement: string): string {
  if (!pattern.test(text)) throw new Error(`The nginx config no longer contains ${String(pattern)}.`);
  return text.replace(pattern, replacement);
}

/**
 * A copy of a shipped config that runs unprivileged in `dir`: logs and temp files there, listening on
 * 127.0.0.1:`port`, the upstream servers `hub1`/`hub2` replaced by local ports, and an access log line
 * that names the upstream of each request.
 */
function localConfig(file: string, dir: string, port: number, upstreams: number[]): string {
  let text = readFileSync(join(DEPLOY, file), 'utf8');
  text = must(text, /^worker_processes auto;/m, 'worker_processes 1;');
  text = must(text, /error_log \/var\/log\/nginx\/error\.log/, `error_log ${dir}/error.log`);
  text = must(
    text,
    /access_log \/var\/log\/nginx\/access\.log;/,
    [
      `log_format upstreams '$request_method $request_uri $status $upstream_addr';`,
      `access_log ${dir}/access.log upstreams;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${dir}/${t};`),
    ].join('\n  '),
  );
  text = must(
    text,
    /server hub1:3000;\s*server hub2:3000;/,
    upstreams.map((p) => `server 127.0.0.1:${p};`).join('\n    '),
  );
  return must(text, /listen 80;/, `listen 127.0.0.1:${port};`);
}

describe.skipIf(!HAS_NGINX)('nginx configs (deploy/)', () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'relayhub-nginx-'));
    dirs.push(dir);
    return dir;
  };

  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it.each(['nginx.conf', 'nginx-no-affinity.conf'])('%s passes nginx -t', async (file) => {
    const dir = tempDir();
    writeFileSync(join(dir, 'nginx.conf'), localConfig(file, dir, 18_080, [18_081, 18_082]));
    const { stderr } = await run(NGINX, [
      '-t',
      '-p',
      dir,
      '-c',
      join(dir, 'nginx.conf'),
      '-g',
      `pid ${dir}/nginx.pid;`,
    ]);
    expect(stderr).toMatch(/syntax is ok/);
    expect(stderr).toMatch(/test is successful/);
  });

  it('nginx-no-affinity.conf has no affinity, forwards the WebSocket upgrade and keeps quiet sockets', () => {
    const text = readFileSync(join(DEPLOY, 'nginx-no-affinity.conf'), 'utf8');
    const directives = text.replace(/#.*$/gm, '');
    expect(directives).not.toMatch(/\b(ip_hash|hash|sticky)\b/);
    expect(directives).toMatch(/proxy_http_version 1\.1;/);
    expect(directives).toMatch(/proxy_set_header Upgrade \$http_upgrade;/);
    expect(directives).toMatch(/proxy_set_header Connection \$connection_upgrade;/);
    const readTimeout = /proxy_read_timeout (\d+)s;/.exec(directives);
    // note: above the hubs' 15 s keep-alive ping and the client's 30 s server timeout.
    expect(Number(readTimeout?.[1])).toBeGreaterThan(30);
    expect(readFileSync(join(DEPLOY, 'nginx.conf'), 'utf8')).toMatch(/^\s*ip_hash;/m);
  });

  describe('in front of two instances, round-robin', () => {
    const prefix = uniquePrefix('nginx');
    const instances = new InstancePool();
    const clients = new ClientPool();
    let nginx: ChildProcess | undefined;
    let started: InstanceProcess[];
    let base: string;
    let dir: string;

    beforeAll(async () => {
      started = await Promise.all(
        [0, 1].map(() =>
          instances.start({
            redisUrl: REDIS_URL,
            channelPrefix: prefix,
            args: ['--transports', 'WebSockets', '--max-connections-per-address', '0'],
          }),
        ),
      );
      dir = tempDir();
      const port = await freePortRange(1);
      writeFileSync(
        join(dir, 'nginx.conf'),
        localConfig(
          'nginx-no-affinity.conf',
          dir,
          port,
          started.map((i) => i.port),
        ),
      );
      nginx = spawn(
        NGINX,
        ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid;`],
        { stdio: 'ignore' },
      );
      base = `http://127.0.0.1:${port}`;
      await waitFor(
        () =>
          fetch(`${base}/healthz`).then(
            (r) => r.ok,
            () => false,
          ),
        { timeoutMs: 10_000 },
      );
    });

    afterAll(async () => {
      await clients.stopAll();
      if (nginx && nginx.exitCode === null) {
        const exited = new Promise((resolve) => nginx?.once('exit', resolve));
        nginx.kill('SIGTERM');
        await exited;
      }
      await instances.stopAll();
      await deletePrefix(REDIS_URL, prefix);
    });

    it('official clients connect through negotiate and reach each other across the instances', async () => {
      const users = Array.from({ length: 10 }, (_, i) => `nginx-user-${i}`);
      const received = users.map(() => [] as string[]);
      const connections: HubConnection[] = await Promise.all(
        users.map(async (user, i) => {
          const connection = buildClient(`${base}/hubs/demo`, {
            token: await signToken(user),
            transport: HttpTransportType.WebSockets,
          });
          connection.on('message', (from: string, text: string) => received[i]?.push(`${from}|${text}`));
          clients.add(connection);
          await connection.start();
          return connection;
        }),
      );
      await Promise.all(
        connections.map((c, i) => c.invoke('SendToUser', users[(i + 1) % users.length], `hello ${i}`)),
      );
      await waitFor(() => received.every((r) => r.length >= 1));
      received.forEach((r, i) => {
        const from = (i + users.length - 1) % users.length;
        expect(r).toEqual([`${users[from]}|hello ${from}`]);
      });

      const held = await Promise.all(
        started.map((i) =>
          fetch(i.url('/healthz')).then((r) => r.json() as Promise<{ connections: number }>),
        ),
      );
      expect(held.map((h) => h.connections > 0)).toEqual([true, true]);
      expect(held.reduce((n, h) => n + h.connections, 0)).toBe(users.length);

      // note: nginx logs a WebSocket when it closes; both the negotiates and the sockets went to both.
      await clients.stopAll();
      const lines = (pattern: RegExp) =>
        readFileSync(join(dir, 'access.log'), 'utf8')
          .split('\n')
          .filter((line) => pattern.test(line));
      const upgrades = /^GET \/hubs\/demo\?id=\S+ 101 /;
      await waitFor(() => lines(upgrades).length === users.length);
      const upstreamsOf = (pattern: RegExp) => new Set(lines(pattern).map((line) => line.split(' ')[3]));
      expect(upstreamsOf(/^POST \/hubs\/demo\/negotiate\S* 200 /).size).toBe(2);
      expect(upstreamsOf(upgrades).size).toBe(2);
    });
  });
});
