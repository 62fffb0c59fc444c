import { HubError } from '../errors.js';
import type { ConnectionContext, HubDefinition } from '../hub/hub.js';

/** The path the demo (and the acceptance tests) mount the example hub at. */
export const DEMO_HUB_PATH = '/hubs/demo';

function text(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0)
    throw new HubError(`'${name}' must be a non-empty string.`);
  return value;
}

/** Group names the demo accepts: short, and no `{`/`}` (they would break Redis Cluster hashtags). */
export const DEMO_GROUP_NAME = /^[A-Za-z0-9._:@-]{1,64}$/;
/** How many groups one demo connection may join (the server-wide cap is maxGroupsPerConnection). */
export const DEMO_MAX_GROUPS = 100;

/** The groups a connection joined, in `ctx.items`, for the demo's per-connection cap. */
const joined = (ctx: ConnectionContext): Set<string> => {
  let groups = ctx.items.get('demo:groups') as Set<string> | undefined;
  if (!groups) {
    groups = new Set();
    ctx.items.set('demo:groups', groups);
  }
  return groups;
};

/** Who a message is from: the user when there is one, else the connection. */
const sender = (ctx: ConnectionContext): string => ctx.userId ?? ctx.connectionId;

/**
 * The example hub: group membership, broadcasts, messages to a user, and Echo. Clients receive
 * `message(from, text)`.
 */
export const demoHub: HubDefinition = {
  methods: {
    JoinGroup: async (ctx, group: unknown) => {
      const name = text(group, 'group');
      await ctx.groups.add(ctx.connectionId, name);
      joined(ctx).add(name);
    },
    LeaveGroup: async (ctx, group: unknown) => {
      const name = text(group, 'group');
      await ctx.groups.remove(ctx.connectionId, name);
      joined(ctx).delete(name);
    },
    SendToAll: (ctx, message: unknown) => ctx.clients.all.send('message', sender(ctx), text(message, 'text')),
    SendToGroup: (ctx, group: unknown, message: unknown) =>
      ctx.clients.group(text(group, 'group')).send('message', sender(ctx), text(message, 'text')),
    SendToUser: (ctx, userId: unknown, message: unknown) =>
      ctx.clients.user(text(userId, 'userId')).send('message', sender(ctx), text(message, 'text')),
    Echo: (_ctx, value: unknown) => value,
  },
  // note: a HubError thrown here reaches the caller with its reason (a plain `false` would not say why).
  authorizeGroupJoin: (ctx, group) => {
    if (!DEMO_GROUP_NAME.test(group)) {
      throw new HubError(
        `Group names are 1 to 64 letters, digits or . _ : @ - (got ${group.length} characters).`,
      );
    }
    const groups = joined(ctx);
    if (groups.size >= DEMO_MAX_GROUPS && !groups.has(group)) {
      throw new HubError(`A connection may join at most ${DEMO_MAX_GROUPS} groups in the demo hub.`);
    }
    return true;
  },
};
