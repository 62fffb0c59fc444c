/** A check must answer within this long, or it counts as failed (a hung database is not healthy). */
const CHECK_TIMEOUT_MS = 2_000;

export interface CheckResult {
  ok: boolean;
  error?: string;
}

/** Runs every check at once; each resolves to ok or to the error it failed with. */
export async function runChecks(
  checks: Record<string, () => Promise<unknown>>,
): Promise<Record<string, CheckResult>> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]): Promise<[string, CheckResult]> => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          check(),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)),
              CHECK_TIMEOUT_MS,
            );
          }),
        ]);
        return [name, { ok: true }];
      } catch (error) {
        return [name, { ok: false, error: error instanceof Error ? error.message : String(error) }];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return Object.fromEntries(entries);
}
