import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** An app that uses relayhub with plain `pg` (no drizzle), typechecked with skipLibCheck: false. */
const APP = `import pg from 'pg';
import { enqueue, HubServer, jwtAuthenticator, type HubServerOptions } from 'relayhub';
import { onReliable } from 'relayhub/client';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const options: HubServerOptions = {
  backplane: 'streams',
  redis: 'redis://127.0.0.1:6379',
  channelPrefix: 'app',
  authenticate: jwtAuthenticator({ secret: 'a-secret-that-is-long-enough-for-hs256' }),
  cors: { origins: ['https://app.example.com'] },
};
export const server = new HubServer(options);
server.mapHub('/hubs/chat', {
  methods: { Send: (ctx, text: string) => ctx.clients.all.send('message', ctx.userId, text) },
});
export async function orderShipped(orderId: string, userId: string): Promise<string> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { id } = await enqueue(client, { userId, target: 'orderStatus', args: [{ orderId }] });
    await client.query('COMMIT');
    return id;
  } finally {
    client.release();
  }
}
export { onReliable };
`;

describe('the npm package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayhub-pack-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('packs, installs into an empty project, imports, typechecks with skipLibCheck: false, and runs its CLI', async () => {
    // note: npm test has just built dist/; --ignore-scripts skips the prepare build that a git install runs.
    const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
      cwd: ROOT,
    });
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    const files = packed!.files.map((f) => f.path);
    expect(files).toContain('LICENSE');
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('migrations/0001_relayhub_outbox.sql');
    expect(files).toContain('public/demo/index.html');
    expect(files.some((f) => f.startsWith('src/') || f.startsWith('test/'))).toBe(false);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { license: string };
    expect(pkg.license).toBe('MIT');
    expect(readFileSync(join(ROOT, 'LICENSE'), 'utf8')).toMatch(/^MIT License/);

    const app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    await run(
      'npm',
      [
        'install',
        join(dir, packed!.filename),
        'pg',
        '--prefer-offline',
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
      ],
      { cwd: app, timeout: 90_000 },
    );
    const imported = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('relayhub'); const c = await import('relayhub/client'); " +
          'console.log(typeof m.HubServer, typeof m.enqueue, typeof c.onReliable)',
      ],
      { cwd: app },
    );
    expect(imported.stdout.trim()).toBe('function function function');

    writeFileSync(join(app, 'index.ts'), APP);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          // note: a Node app's libs (no DOM): every declaration file is checked, so this is most of the time
          lib: ['ES2022'],
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
        },
        files: ['index.ts'],
      }),
    );
    // note: rejects (with tsc's errors in the message) when the app does not typecheck
    await run(process.execPath, [TSC, '-p', app], { cwd: app, timeout: 90_000 });

    const version = await run(join(app, 'node_modules', '.bin', 'relayhub'), ['--version'], { cwd: app });
    expect(version.stdout.trim()).toBe(
      (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
    );
  }, 180_000);
});
