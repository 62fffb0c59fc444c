/**
 * The SignalR hub protocol's messages (JSON encoding), as specified in dotnet/aspnetcore
 * `src/SignalR/docs/specs/HubProtocol.md`. Field names are the wire names.
 */
export const MessageType = {
  Invocation: 1,
  StreamItem: 2,
  Completion: 3,
  StreamInvocation: 4,
  CancelInvocation: 5,
  Ping: 6,
  Close: 7,
  Ack: 8,
  Sequence: 9,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export type Headers = Record<string, string>;

export interface InvocationMessage {
  type: 1;
  invocationId?: string;
  target: string;
  arguments: unknown[];
  streamIds?: string[];
  headers?: Headers;
}

export interface StreamItemMessage {
  type: 2;
  invocationId: string;
  item: unknown;
  headers?: Headers;
}

export interface CompletionMessage {
  type: 3;
  invocationId: string;
  result?: unknown;
  error?: string;
  headers?: Headers;
}

export interface StreamInvocationMessage {
  type: 4;
  invocationId: string;
  target: string;
  arguments: unknown[];
  streamIds?: string[];
  headers?: Headers;
}

export interface CancelInvocationMessage {
  type: 5;
  invocationId: string;
  headers?: Headers;
}

export interface PingMessage {
  type: 6;
}

export interface CloseMessage {
  type: 7;
  error?: string;
  allowReconnect?: boolean;
}

export interface AckMessage {
  type: 8;
  sequenceId: number;
}

export interface SequenceMessage {
  type: 9;
  sequenceId: number;
}

export type HubMessage =
  | InvocationMessage
  | StreamItemMessage
  | CompletionMessage
  | StreamInvocationMessage
  | CancelInvocationMessage
  | PingMessage
  | CloseMessage
  | AckMessage
  | SequenceMessage;

/** Messages that stateful reconnect numbers, buffers and acks (everything but Ping, Close, Ack, Sequence). */
export const isSequenced = (type: number): boolean => type >= MessageType.Invocation && type <= 5;
