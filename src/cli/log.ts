import { type Logger, pino } from 'pino';

const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

/**
 * The CLI's logger: pino at `LOG_LEVEL` (default info). `LOG_FORMAT=text` prints one readable line per
 * event (`relayhub demo` uses it for its processes) instead of one JSON object.
 */
export function cliLogger(env: NodeJS.ProcessEnv = process.env): Logger {
  const level = env.LOG_LEVEL ?? 'info';
  if (env.LOG_FORMAT !== 'text') return pino({ level });
  const prefix = env.INSTANCE_ID ? `${env.INSTANCE_ID}: ` : '';
  return pino(
    { level },
    {
      write(line: string) {
        const event = JSON.parse(line) as Record<string, unknown>;
        const fields = Object.entries(event)
          .filter(([key]) => !SKIP.has(key))
          .map(([key, value]) => `${key}=${describe(value)}`);
        const level = LEVELS[event.level as number] ?? String(event.level);
        process.stderr.write(
          `${prefix}${level} ${String(event.msg ?? '')}${fields.length ? ` ${fields.join(' ')}` : ''}\n`,
        );
      },
    },
  );
}

function describe(value: unknown): string {
  if (value && typeof value === 'object' && 'message' in value)
    return JSON.stringify((value as { message: unknown }).message);
  return typeof value === 'string' ? value : JSON.stringify(value);
}
