/**
 * Every error relayhub raises is a {@link RelayhubError} with a stable `code` (safe to switch on) and a
 * `remedy` sentence that says what to do about it.
 */
export type ErrorCode =
  | 'ERR_CONFIG'
  | 'ERR_INVALID_MESSAGE'
  | 'ERR_PROTOCOL'
  | 'ERR_HANDSHAKE'
  | 'ERR_MESSAGE_TOO_LARGE'
  | 'ERR_UNAUTHORIZED'
  | 'ERR_FORBIDDEN'
  | 'ERR_HUB_METHOD'
  | 'ERR_CONNECTION_NOT_FOUND'
  | 'ERR_CONNECTION_CLOSED'
  | 'ERR_INVOCATION_TIMEOUT'
  | 'ERR_CLIENT_RESULT'
  | 'ERR_SLOW_CONSUMER'
  | 'ERR_BACKPLANE_UNAVAILABLE'
  | 'ERR_CLOSED';

export class RelayhubError extends Error {
  readonly code: ErrorCode;
  /** What the caller can do about it, as one sentence. */
  readonly remedy: string | undefined;

  constructor(code: ErrorCode, message: string, options: { remedy?: string; cause?: unknown } = {}) {
    super(options.remedy ? `${message} ${options.remedy}` : message, { cause: options.cause });
    this.name = 'RelayhubError';
    this.code = code;
    this.remedy = options.remedy;
  }
}

/**
 * A violation of the SignalR hub protocol by a client. The connection is closed with a Close message whose
 * `error` is this message; `allowReconnect` is false because resending the same bytes would fail again.
 */
export class ProtocolError extends RelayhubError {
  constructor(
    message: string,
    code: 'ERR_PROTOCOL' | 'ERR_HANDSHAKE' | 'ERR_MESSAGE_TOO_LARGE' = 'ERR_PROTOCOL',
  ) {
    super(code, message);
    this.name = 'ProtocolError';
  }
}

/** Thrown by the app (or relayhub) inside a hub method to send its message to the caller as-is. */
export class HubError extends RelayhubError {
  constructor(message: string) {
    super('ERR_HUB_METHOD', message);
    this.name = 'HubError';
  }
}

export const isRelayhubError = (error: unknown): error is RelayhubError => error instanceof RelayhubError;
