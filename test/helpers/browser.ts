import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium } from 'playwright-core';

/** Debian's chromium package; `.ci/run` installs it when it is missing. */
export const CHROMIUM = '/usr/bin/chromium';

/** Where the browser tests save their screenshots (git-ignored). */
export const ARTIFACTS_DIR = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

export interface Browser {
  context: BrowserContext;
  /** The screenshot path of `name` (e.g. `demo-page.png`) under {@link ARTIFACTS_DIR}. */
  artifact(name: string): string;
  close(): Promise<void>;
}

/** Launches headless Debian chromium with a fresh profile; throws a clear sentence when it is missing. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `The browser tests need Debian's chromium at ${CHROMIUM}: run 'apt-get install -y chromium' ` +
        '(.ci/run installs it when it runs as root).',
    );
  }
  const profile = mkdtempSync(join(tmpdir(), 'relayhub-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1200, height: 760 },
  });
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  return {
    context,
    artifact: (name) => join(ARTIFACTS_DIR, name),
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
