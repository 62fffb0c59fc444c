import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EncodedArguments } from '../../src/protocol/encoded-arguments.js';
import { jsonProtocol } from '../../src/protocol/json/json-protocol.js';
import { MessageType } from '../../src/protocol/messages.js';
import { messagePackProtocol } from '../../src/protocol/messagepack/messagepack-protocol.js';

const meta = { messageId: 'm-1', offset: 7 };

describe('EncodedArguments', () => {
  it('writes the same JSON record as the protocol does for the parsed values', () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue()), fc.string(), (args, target) => {
        const encoded = EncodedArguments.withLast(JSON.stringify(args), JSON.stringify(meta));
        expect(encoded.values).toEqual(JSON.parse(JSON.stringify([...args, meta])));
        expect(encoded.invocation(jsonProtocol, 's3', target)).toBe(
          jsonProtocol.write({
            type: MessageType.Invocation,
            invocationId: 's3',
            target,
            arguments: encoded.values,
          }),
        );
      }),
    );
  });

  it('appends the last argument to an empty list', () => {
    expect(EncodedArguments.withLast('[]', JSON.stringify(meta)).json).toBe(`[${JSON.stringify(meta)}]`);
  });

  it('gives a MessagePack client the parsed values', () => {
    const encoded = EncodedArguments.withLast('[1,"two",{"three":3}]', JSON.stringify(meta));
    expect(encoded.invocation(messagePackProtocol, 's1', 'go')).toEqual(
      messagePackProtocol.write({
        type: MessageType.Invocation,
        invocationId: 's1',
        target: 'go',
        arguments: [1, 'two', { three: 3 }, meta],
      }),
    );
  });
});
