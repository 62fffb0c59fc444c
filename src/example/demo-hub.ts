import { HubError } from '../errors.js';
import type { ConnectionContext, HubDefinition } from '../hub/hub.js';

/** The path the demo (and the acceptance tests) mount the example hub at. */
export const DEMO_HUB_PATH = '/hubs/demo';

function text(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0)
    throw new HubError(`'${name}' must be a non-empty string.`);
  return value;
}

/** Who a message is from: the user when there is one, else the connection. */
const sender = (ctx: ConnectionContext): string => ctx.userId ?? ctx.connectionId;

/**
 * The example hub: group membership, broadcasts, messages to a user, and Echo. Clients receive
 * `message(from, text)`.
 */
export const demoHub: HubDefinition = {
  methods: {
    JoinGroup: (ctx, group: unknown) => ctx.groups.add(ctx.connectionId, text(group, 'group')),
    LeaveGroup: (ctx, group: unknown) => ctx.groups.remove(ctx.connectionId, text(group, 'group')),
    SendToAll: (ctx, message: unknown) => ctx.clients.all.send('message', sender(ctx), text(message, 'text')),
    SendToGroup: (ctx, group: unknown, message: unknown) =>
      ctx.clients.group(text(group, 'group')).send('message', sender(ctx), text(message, 'text')),
    SendToUser: (ctx, userId: unknown, message: unknown) =>
      ctx.clients.user(text(userId, 'userId')).send('message', sender(ctx), text(message, 'text')),
    Echo: (_ctx, value: unknown) => value,
  },
};
