import { RelayhubError } from '../../errors.js';
import type { Audience, Backplane, BackplaneHealth, HubChannel, LocalHub } from '../backplane.js';

/**
 * The instances that share one memory backplane: by default each `MemoryBackplane` has its own, so one
 * process is one instance. Hand the same bus to several hub servers in one process to make them behave
 * like instances of one cluster (the contract tests do).
 */
export class MemoryBus {
  readonly #hubs = new Map<string, Set<LocalHub>>();

  join(hub: string, local: LocalHub): void {
    let locals = this.#hubs.get(hub);
    if (!locals) {
      locals = new Set();
      this.#hubs.set(hub, locals);
    }
    locals.add(local);
  }

  leave(hub: string, local: LocalHub): void {
    const locals = this.#hubs.get(hub);
    locals?.delete(local);
    if (locals?.size === 0) this.#hubs.delete(hub);
  }

  members(hub: string): Iterable<LocalHub> {
    return this.#hubs.get(hub) ?? [];
  }
}

export interface MemoryBackplaneOptions {
  /**
   * The bus shared with other in-process instances.
   * @default a new bus of its own
   */
  bus?: MemoryBus;
}

/** One process, no Redis: sends are delivered synchronously to the connections of this process. */
export class MemoryBackplane implements Backplane {
  readonly kind = 'memory' as const;
  readonly #bus: MemoryBus;
  readonly #channels = new Set<MemoryChannel>();

  constructor(options: MemoryBackplaneOptions = {}) {
    this.#bus = options.bus ?? new MemoryBus();
  }

  async open(hub: string, local: LocalHub): Promise<HubChannel> {
    const channel = new MemoryChannel(this.#bus, hub, local, () => this.#channels.delete(channel));
    this.#channels.add(channel);
    return channel;
  }

  health(): BackplaneHealth {
    return { status: 'ready', possibleGaps: 0, failedSends: 0 };
  }

  async close(): Promise<void> {
    await Promise.all([...this.#channels].map((c) => c.close()));
  }
}

class MemoryChannel implements HubChannel {
  #closed = false;

  constructor(
    private readonly bus: MemoryBus,
    private readonly hub: string,
    private readonly local: LocalHub,
    private readonly onClose: () => void,
  ) {
    bus.join(hub, local);
  }

  // note: every instance sees every send on the bus, so there is nothing to follow.
  async follow(): Promise<void> {}

  async unfollow(): Promise<void> {}

  async unfollowMany(): Promise<void> {}

  async publish(audience: Audience, frame: string): Promise<void> {
    // note: the local instance first, so that its recipients never wait behind other instances.
    this.local.deliver(audience, frame);
    for (const member of this.bus.members(this.hub)) {
      if (member !== this.local) member.deliver(audience, frame);
    }
  }

  async addToGroup(connectionId: string, group: string): Promise<void> {
    for (const member of this.bus.members(this.hub)) {
      if (await member.addToGroup(connectionId, group)) return;
    }
    throw connectionNotFound(connectionId);
  }

  async removeFromGroup(connectionId: string, group: string): Promise<void> {
    for (const member of this.bus.members(this.hub)) {
      if (await member.removeFromGroup(connectionId, group)) return;
    }
    throw connectionNotFound(connectionId);
  }

  async invokeClient(
    connectionId: string,
    target: string,
    args: unknown[],
    timeoutMs: number,
  ): Promise<unknown> {
    for (const member of this.bus.members(this.hub)) {
      const pending = member.invokeLocal(connectionId, target, args, timeoutMs);
      if (pending) return pending;
    }
    throw connectionNotFound(connectionId);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.bus.leave(this.hub, this.local);
    this.onClose();
  }
}

export const connectionNotFound = (connectionId: string): RelayhubError =>
  new RelayhubError('ERR_CONNECTION_NOT_FOUND', `No hub instance holds connection '${connectionId}'.`, {
    remedy: 'The client has disconnected; use the connection id from a live connection.',
  });
