#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { RelayhubError } from '../errors.js';
import { DEMO_HUB_PATH, demoHub } from '../example/demo-hub.js';
import { anonymous, jwtAuthenticator } from '../hub/auth.js';
import { HubServer } from '../hub/hub-server.js';

const DEV_JWT_SECRET = 'relayhub-dev-secret-change-me';

interface ServeOptions {
  port: number;
  host: string;
  backplane: 'memory' | 'pubsub' | 'streams';
  redisUrl: string;
  channelPrefix: string;
  instanceId?: string;
  jwtSecret?: string;
}

const port = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65_535)
    throw new InvalidArgumentError('Use a port between 0 and 65535.');
  return n;
};

const logger = pino({ level: process.env.LOG_LEVEL ?? 'info' });

async function serve(options: ServeOptions, demo = false): Promise<void> {
  if (options.backplane !== 'memory') {
    throw new RelayhubError(
      'ERR_CONFIG',
      `The '${options.backplane}' backplane is not available in this version.`,
      {
        remedy: 'Use --backplane memory.',
      },
    );
  }
  const secret = options.jwtSecret ?? (demo ? DEV_JWT_SECRET : undefined);
  if (!secret)
    logger.warn('JWT_SECRET is not set: connections are anonymous and clients.user() reaches nobody.');
  const server = new HubServer({
    authenticate: secret ? jwtAuthenticator({ secret }) : anonymous,
    logger,
  });
  server.mapHub(DEMO_HUB_PATH, demoHub);
  const address = await server.listen(options.port, options.host);
  logger.info({ port: address.port, hub: DEMO_HUB_PATH, backplane: options.backplane }, 'relayhub listening');
  // note: tests and scripts read this line to learn the port when they pass --port 0.
  process.stdout.write(`relayhub listening on port ${address.port}\n`);
  if (demo && secret) {
    for (const user of ['alice', 'bob']) {
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(user)
        .sign(new TextEncoder().encode(secret));
      process.stdout.write(`demo token for ${user}: ${token}\n`);
    }
    process.stdout.write(
      `connect with: new HubConnectionBuilder().withUrl('http://localhost:${address.port}${DEMO_HUB_PATH}', { accessTokenFactory: () => token })\n`,
    );
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function serveCommand(name: string, description: string): Command {
  return new Command(name)
    .description(description)
    .addOption(
      new Option('--port <port>', 'HTTP port (0 picks a free one)').env('PORT').default(3000).argParser(port),
    )
    .addOption(new Option('--host <host>', 'interface to listen on').env('HOST').default('0.0.0.0'))
    .addOption(
      new Option('--backplane <kind>', 'how instances share sends')
        .env('BACKPLANE')
        .choices(['memory', 'pubsub', 'streams'])
        .default('memory'),
    )
    .addOption(
      new Option('--redis-url <url>', 'Redis for the pubsub and streams backplanes')
        .env('REDIS_URL')
        .default('redis://127.0.0.1:6379'),
    )
    .addOption(
      new Option('--channel-prefix <prefix>', 'prefix of every Redis key and channel')
        .env('CHANNEL_PREFIX')
        .default('relayhub'),
    )
    .addOption(new Option('--instance-id <id>', 'stable id of this instance').env('INSTANCE_ID'))
    .addOption(
      new Option('--jwt-secret <secret>', 'HS256 secret for bearer JWTs (sub = user id)').env('JWT_SECRET'),
    );
}

const program = new Command('relayhub').description(
  'Realtime hub server speaking the SignalR JSON protocol.',
);
program.addCommand(
  serveCommand('serve', 'serve the example hub at /hubs/demo').action((options: ServeOptions) =>
    serve(options),
  ),
);
program.addCommand(
  serveCommand('demo', 'serve the example hub with a development JWT secret and print demo tokens').action(
    (options: ServeOptions) => serve(options, true),
  ),
);

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
