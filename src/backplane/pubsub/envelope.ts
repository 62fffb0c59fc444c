/**
 * What travels on a relayhub PUB/SUB channel: a one-line JSON header, a newline, and a body (the formatted
 * SignalR frame for sends, JSON for requests and replies). The frame is copied as-is, never re-encoded: a
 * JSON string never contains a raw newline, so the first newline always ends the header.
 */
export type Header =
  /** A send; `x`: connection ids to skip; `gs`: every group of a multi-group send (to deliver once). */
  | { k: 's'; o: string; x?: readonly string[]; gs?: readonly string[] }
  /** A request to the instance holding a connection: group add / remove, or a client result. */
  | { k: 'ga' | 'gr'; o: string; id: number; c: string; g: string }
  | { k: 'inv'; o: string; id: number; c: string; t: string; ms: number }
  /** The answer to a request (body: the result for `inv`); `code`/`m` when it failed. */
  | { k: 'r'; o: string; id: number; code?: string; m?: string };

export function encode(header: Header, body = ''): string {
  return `${JSON.stringify(header)}\n${body}`;
}

export function decode(message: string): { header: Header; body: string } | undefined {
  const newline = message.indexOf('\n');
  if (newline < 0) return undefined;
  try {
    return { header: JSON.parse(message.slice(0, newline)) as Header, body: message.slice(newline + 1) };
  } catch {
    return undefined;
  }
}
