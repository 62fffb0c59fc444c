import type { Audience } from '../backplane/backplane.js';

/** What the registry needs of a connection. */
export interface Addressable {
  readonly connectionId: string;
  readonly userId: string | undefined;
  /** Writes a formatted, sequenced record to the connection. */
  write(frame: string): void;
}

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

  add(connection: C): void {
    this.#connections.set(connection.connectionId, connection);
    if (connection.userId !== undefined) addTo(this.#users, connection.userId, connection);
  }

  /** Forgets the connection and its group memberships. */
  remove(connection: C): void {
    if (this.#connections.get(connection.connectionId) !== connection) return;
    this.#connections.delete(connection.connectionId);
    if (connection.userId !== undefined) removeFrom(this.#users, connection.userId, connection);
    for (const group of this.#groupsOf.get(connection) ?? []) removeFrom(this.#groups, group, connection);
    this.#groupsOf.delete(connection);
  }

  joinGroup(connection: C, group: string): void {
    addTo(this.#groups, group, connection);
    let groups = this.#groupsOf.get(connection);
    if (!groups) {
      groups = new Set();
      this.#groupsOf.set(connection, groups);
    }
    groups.add(group);
  }

  leaveGroup(connection: C, group: string): void {
    removeFrom(this.#groups, group, connection);
    this.#groupsOf.get(connection)?.delete(group);
  }

  groupsOf(connection: C): ReadonlySet<string> {
    return this.#groupsOf.get(connection) ?? new Set();
  }

  /** Writes `frame` once to each local connection in the audience. */
  deliver(audience: Audience, frame: string): void {
    for (const connection of this.resolve(audience)) connection.write(frame);
  }

  /** The local connections in the audience, each once. */
  resolve(audience: Audience): Iterable<C> {
    switch (audience.kind) {
      case 'all':
        return excluding(this.#connections.values(), audience.except);
      case 'connections':
        return unique(audience.ids.map((id) => this.#connections.get(id)));
      case 'groups':
        return excluding(union(audience.names.map((name) => this.#groups.get(name))), audience.except);
      case 'users':
        return union(audience.ids.map((id) => this.#users.get(id)));
    }
  }
}

function addTo<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
  let set = index.get(key);
  if (!set) {
    set = new Set();
    index.set(key, set);
  }
  set.add(value);
}

function removeFrom<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
  const set = index.get(key);
  if (!set) return;
  set.delete(value);
  if (set.size === 0) index.delete(key);
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
