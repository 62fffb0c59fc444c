#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { RelayhubError } from '../errors.js';
import { requireUrl } from '../unavailable.js';
import { DEFAULT_DATABASE_URL } from '../worker/outbox-worker.js';
import { DEMO_DESCRIPTION, runDemo } from './demo.js';
import { cliLogger } from './log.js';
import { runMigrate, runWorker } from './worker.js';
import { serve } from './serve.js';

const port = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65_535)
    throw new InvalidArgumentError('Use a port between 0 and 65535.');
  return n;
};

/** A comma-separated list; the hub options check its items. */
const list = (value: string): string[] =>
  value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);

/** A repeatable option: each occurrence (or the environment variable) adds its value. */
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** A repeatable option whose values (and its environment variable's) are items separated by whitespace or commas. */
const collectItems = (value: string, previous: string[] | undefined): string[] => [
  ...(previous ?? []),
  ...value.split(/[\s,]+/).filter((item) => item.length > 0),
];

const count = (value: string): number => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('Use a non-negative integer.');
  return n;
};

/** Options every command shares; each flag also reads an environment variable. */
function withCommonOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--port <port>', 'HTTP port (0 picks a free one)').env('PORT').default(3000).argParser(port),
    )
    .addOption(new Option('--host <host>', 'interface to listen on').env('HOST').default('0.0.0.0'))
    .addOption(
      new Option('--redis-url <url>', 'Redis for the pubsub and streams backplanes')
        .env('REDIS_URL')
        .default('redis://127.0.0.1:6379'),
    )
    .addOption(redisClusterOption())
    .addOption(
      new Option('--channel-prefix <prefix>', 'prefix of every Redis key and channel')
        .env('CHANNEL_PREFIX')
        .default('relayhub'),
    )
    .addOption(
      new Option('--jwt-secret <secret>', 'HS256 secret for bearer JWTs (sub = user id)').env('JWT_SECRET'),
    )
    .addOption(databaseUrlOption());
}

function metricsPortOption(description: string): Option {
  return new Option('--metrics-port <port>', description).env('METRICS_PORT').argParser(port);
}

/**
 * `--redis-cluster` (or `REDIS_CLUSTER=true`): `--redis-url` is then a comma-separated list of Cluster seed
 * nodes. note: parsed by hand, because commander would take `REDIS_CLUSTER=false` for true.
 */
function redisClusterOption(): Option {
  return new Option(
    '--redis-cluster',
    'Redis is a Cluster: --redis-url lists seed nodes, comma-separated (env REDIS_CLUSTER=true)',
  ).default(/^(1|true|yes)$/i.test(process.env.REDIS_CLUSTER ?? ''));
}

function databaseUrlOption(): Option {
  return new Option('--database-url <url>', 'Postgres for the outbox')
    .env('DATABASE_URL')
    .default(DEFAULT_DATABASE_URL);
}

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

const program = new Command('relayhub')
  .description('Realtime hub server speaking the SignalR hub protocols, scaled out through Redis.')
  .version(version, '-v, --version', 'print the version')
  .addHelpText(
    'after',
    `
Environment: every flag also reads its variable (shown in each command's --help), and
  LOG_LEVEL   trace | debug | info | warn | error | fatal | silent (default: info)
  LOG_FORMAT  json (default) | text (one readable line per event; relayhub demo uses it)`,
  )
  .showHelpAfterError();

program.addCommand(
  withCommonOptions(new Command('serve'))
    .description('serve the example hub at /hubs/demo')
    .addOption(
      new Option('--backplane <kind>', 'how instances share sends')
        .env('BACKPLANE')
        .choices(['memory', 'pubsub', 'streams'])
        .default('memory'),
    )
    .addOption(
      new Option('--instance-id <id>', 'stable id of this instance (default: random)').env('INSTANCE_ID'),
    )
    .addOption(
      new Option(
        '--connection-token-secret <secret>',
        'signs connection tokens; the same on every instance lets WebSockets skip sticky sessions (default: derived from --jwt-secret)',
      ).env('CONNECTION_TOKEN_SECRET'),
    )
    .addOption(
      new Option(
        '--redis-endpoint <entry>',
        'a Redis endpoint NAME[:primary|:secondary]=REDIS_URL, instead of --redis-url (repeatable; env: entries separated by whitespace)',
      )
        .env('REDIS_ENDPOINTS')
        .argParser(collect),
    )
    .addOption(
      new Option(
        '--public-url <entry>',
        'NAME=BASE_URL: the public address of the instances whose primary is endpoint NAME, for negotiate redirects (repeatable)',
      )
        .env('PUBLIC_URLS')
        .argParser(collect),
    )
    .addOption(
      new Option(
        '--self-url <url>',
        "this instance's public base URL (default: its primaries' --public-url count as its own)",
      ).env('SELF_URL'),
    )
    .addOption(
      // note: not .env(): commander turns a boolean flag on whenever the variable exists, even 'false'.
      new Option(
        '--example-app',
        'mount the example orders API, POST /api/orders/:id/status (env EXAMPLE_APP=true; needs streams)',
      ).default(process.env.EXAMPLE_APP === 'true' || process.env.EXAMPLE_APP === '1'),
    )
    .addOption(
      new Option('--max-connections-per-address <n>', 'sockets one remote address may hold (0: no cap)')
        .env('MAX_CONNECTIONS_PER_ADDRESS')
        .argParser(count),
    )
    .addOption(
      new Option('--transports <list>', 'transports to offer: WebSockets,ServerSentEvents,LongPolling')
        .env('TRANSPORTS')
        .argParser(list),
    )
    .addOption(
      new Option('--protocols <list>', 'hub protocols to accept: json,messagepack')
        .env('PROTOCOLS')
        .argParser(list),
    )
    .addOption(metricsPortOption('serve GET /metrics on this port instead of --port'))
    .option('--no-metrics', 'do not serve GET /metrics')
    .addOption(
      new Option('--cors-origins <origins>', 'browser origins allowed to connect, comma-separated')
        .env('CORS_ORIGINS')
        .argParser(list),
    )
    .addOption(
      // note: not .env(): commander turns a boolean flag on whenever the variable exists, even 'false'.
      new Option(
        '--dashboard',
        'serve the live dashboard at /relayhub/, behind a token (env DASHBOARD=true)',
      ).default(process.env.DASHBOARD === 'true' || process.env.DASHBOARD === '1'),
    )
    .addOption(
      new Option('--dashboard-token <token>', 'the dashboard token (default: random, printed at start)').env(
        'DASHBOARD_TOKEN',
      ),
    )
    .addOption(new Option('--demo <origins>').argParser(list).hideHelp())
    .action((options) => serve(options, logger())),
);

program.addCommand(
  new Command('worker')
    .description('relay committed outbox rows to the reliable lane and run the maintenance jobs')
    .addOption(
      new Option('--redis-url <url>', 'Redis of the hubs').env('REDIS_URL').default('redis://127.0.0.1:6379'),
    )
    .addOption(redisClusterOption())
    .addOption(databaseUrlOption())
    .addOption(
      new Option('--channel-prefix <prefix>', 'prefix of every Redis key and channel')
        .env('CHANNEL_PREFIX')
        .default('relayhub'),
    )
    .addOption(
      new Option(
        '--redis-endpoint <entry>',
        'a Redis endpoint NAME[:primary|:secondary]=REDIS_URL, repeatable (env REDIS_ENDPOINTS, whitespace-separated); ' +
          "each user's rows go to the user's inbox endpoint; replaces --redis-url",
      )
        .env('REDIS_ENDPOINTS')
        .argParser(collect),
    )
    .addOption(
      new Option(
        '--hub <path>',
        'a hub whose outbox rows this worker relays, repeatable (env HUBS, comma- or space-separated; default /hubs/demo)',
      )
        .env('HUBS')
        .argParser(collectItems),
    )
    .addOption(
      new Option('--instance-id <id>', 'stable id of this worker (default: random)').env('INSTANCE_ID'),
    )
    .option('--migrate', 'apply the migrations before starting', false)
    .addOption(metricsPortOption('serve GET /metrics (Prometheus) on this port'))
    .action((options) => runWorker(options, logger())),
);

program.addCommand(
  new Command('migrate')
    .description('apply the SQL migrations (idempotent; under an advisory lock)')
    .addOption(databaseUrlOption())
    .action((options) => runMigrate(options)),
);

program.addCommand(
  withCommonOptions(new Command('demo'))
    .description(DEMO_DESCRIPTION)
    .action((options) => runDemo(options, logger())),
);

function logger() {
  return cliLogger();
}

// note: a URL that cannot be one is said so up front, not reported later as "not reachable".
program.hook('preAction', (_program, command) => {
  const options = command.opts<{ redisUrl?: string; databaseUrl?: string }>();
  // note: with --redis-cluster the value lists seed nodes, comma-separated: each must be a URL
  for (const url of options.redisUrl?.split(',') ?? [])
    requireUrl(url.trim(), ['redis:', 'rediss:'], 'REDIS_URL');
  if (options.databaseUrl !== undefined) {
    requireUrl(options.databaseUrl, ['postgres:', 'postgresql:'], 'DATABASE_URL');
  }
});

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof RelayhubError) {
    process.stderr.write(`relayhub: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(
    `relayhub: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
