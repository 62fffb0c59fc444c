// `--help` for the bench scripts: imported first, so that `node bench/<script>.mjs --help` prints the
// script's header comment (what it runs, how, its knobs) and exits before anything starts.
import { readFileSync } from 'node:fs';

if (process.argv.includes('--help') || process.argv.includes('-h')) {
  const lines = [];
  for (const line of readFileSync(process.argv[1], 'utf8').split('\n')) {
    if (!line.startsWith('//')) break;
    lines.push(line.replace(/^\/\/ ?/, ''));
  }
  process.stdout.write(`${lines.join('\n')}\n\nKnobs and figures: bench/README.md, bench/RELIABLE.md.\n`);
  process.exit(0);
}
