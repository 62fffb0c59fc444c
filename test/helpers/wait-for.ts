/**
 * Polls `condition` until it returns a truthy value (or stops throwing), then returns that value. `message`
 * names what was awaited in the timeout's error; a function is called at the timeout, so that it can show
 * the state then (a template string is evaluated when waitFor is called).
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  {
    timeoutMs = 5_000,
    intervalMs = 10,
    message,
  }: { timeoutMs?: number; intervalMs?: number; message?: string | (() => string | Promise<string>) } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const reason = lastError instanceof Error ? `: ${lastError.message}` : '';
      const what = typeof message === 'function' ? await message() : message;
      throw new Error(`${what ?? 'Condition not met'} within ${timeoutMs} ms${reason}`, {
        cause: lastError,
      });
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
