/** `url` with its password replaced by `***`, for everything that is printed, logged or exported. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (!parsed.password) return url;
    parsed.password = '***';
    return parsed.toString();
  } catch {
    // note: not a URL at all; still hide anything shaped like user:password@.
    return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
  }
}
