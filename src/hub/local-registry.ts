import type { Audience } from '../backplane/backplane.js';

/** What the registry needs of a connection. */
export interface Addressable {
  readonly connectionId: string;
  readonly userId: string | undefined;
  /** Writes a sequenced message (in whatever form the connection type takes) to the connection. */
  write(frame: never): void;
}

/** The message form a connection type's `write` takes. */
type FrameOf<C extends Addressable> = Parameters<C['write']>[0];

/**
 * The connections of one hub on this instance, indexed by id, user and group, and the resolution of an
 * {@link Audience} to them. Groups and users exist while they have a member.
 */
export class LocalRegistry<C extends Addressable> {
  readonly #connections = new Map<string, C>();
  readonly #users = new Map<string, Set<C>>();
  readonly #groups = new Map<string, Set<C>>();
  readonly #groupsOf = new Map<C, Set<string>>();

  get size(): number {
    return this.#connections.size;
  }

  get(connectionId: string): C | undefined {
    return this.#connections.get(connectionId);
  }

  connections(): IterableIterator<C> {
    return this.#connections.values();
  }

  /** Adds a connection; true when it is its user's first connection on this instance. */
  add(connection: C): boolean {
    this.#connections.set(connection.connectionId, connection);
    return connection.userId !== undefined && addTo(this.#users, connection.userId, connection);
  }

  /**
   * Forgets the connection and its group memberships; returns what this instance no longer holds any
   * member of (its user, its groups), so that the backplane can stop routing them here.
   */
  remove(connection: C): { userGone: boolean; groupsGone: string[] } {
    const gone = { userGone: false, groupsGone: [] as string[] };
    if (this.#connections.get(connection.connectionId) !== connection) return gone;
    this.#connections.delete(connection.connectionId);
    if (connection.userId !== undefined)
      gone.userGone = removeFrom(this.#users, connection.userId, connection);
    for (const group of this.#groupsOf.get(connection) ?? []) {
      if (removeFrom(this.#groups, group, connection)) gone.groupsGone.push(group);
    }
    this.#groupsOf.delete(connection);
    return gone;
  }

  /** Adds the connection to the group; true when it is the group's first member on this instance. */
  joinGroup(connection: C, group: string): boolean {
    const created = addTo(this.#groups, group, connection);
    let groups = this.#groupsOf.get(connection);
    if (!groups) {
      groups = new Set();
      this.#groupsOf.set(connection, groups);
    }
    groups.add(group);
    return created;
  }

  /** Removes the connection from the group; true when that left the group without members here. */
  leaveGroup(connection: C, group: string): boolean {
    this.#groupsOf.get(connection)?.delete(group);
    return removeFrom(this.#groups, group, connection);
  }

  groupsOf(connection: C): ReadonlySet<string> {
    return this.#groupsOf.get(connection) ?? new Set();
  }

  /** Writes `frame` once to each local connection in the audience. */
  deliver(audience: Audience, frame: FrameOf<C>): void {
    for (const connection of this.resolve(audience)) connection.write(frame);
  }

  *#notIn(connections: Iterable<C>, groups: readonly string[]): Iterable<C> {
    for (const c of connections) {
      const of = this.#groupsOf.get(c);
      if (!groups.some((g) => of?.has(g))) yield c;
    }
  }

  /** Whether a connection of the user is here. */
  hasUser(userId: string): boolean {
    return this.#users.has(userId);
  }

  /** The local connections in the audience, each once. */
  resolve(audience: Audience): Iterable<C> {
    switch (audience.kind) {
      case 'all':
        return excluding(this.#connections.values(), audience.except);
      case 'connections':
        return unique(audience.ids.map((id) => this.#connections.get(id)));
      case 'groups': {
        const members = excluding(
          union(audience.names.map((name) => this.#groups.get(name))),
          audience.except,
        );
        return audience.notIn?.length ? this.#notIn(members, audience.notIn) : members;
      }
      case 'users':
        return union(audience.ids.map((id) => this.#users.get(id)));
    }
  }
}

/** Adds `value` under `key`; true when that created the key. */
function addTo<K, V>(index: Map<K, Set<V>>, key: K, value: V): boolean {
  const set = index.get(key);
  if (set) {
    set.add(value);
    return false;
  }
  index.set(key, new Set([value]));
  return true;
}

/** Removes `value` from under `key`; true when that removed the key's last value. */
function removeFrom<K, V>(index: Map<K, Set<V>>, key: K, value: V): boolean {
  const set = index.get(key);
  if (!set?.delete(value)) return false;
  if (set.size > 0) return false;
  index.delete(key);
  return true;
}

function* excluding<C extends Addressable>(
  connections: Iterable<C>,
  except: readonly string[] | undefined,
): Iterable<C> {
  if (!except || except.length === 0) return yield* connections;
  const skip = new Set(except);
  for (const c of connections) if (!skip.has(c.connectionId)) yield c;
}

function union<C>(sets: (Set<C> | undefined)[]): Iterable<C> {
  const present = sets.filter((s): s is Set<C> => s !== undefined);
  if (present.length <= 1) return present[0] ?? [];
  return unique(present.flatMap((s) => [...s]));
}

function unique<C>(items: (C | undefined)[]): Set<C> {
  const out = new Set<C>();
  for (const item of items) if (item !== undefined) out.add(item);
  return out;
}
