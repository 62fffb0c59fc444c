// Compares the two npm MessagePack codecs on a SignalR invocation array (encode and decode, ops/s).
// Usage: node bench/msgpack-codec.mjs
import './help.mjs';
import { decode, encode } from '@msgpack/msgpack';
import { Packr, Unpackr } from 'msgpackr';

const packr = new Packr({ useRecords: false, moreTypes: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
const message = [
  1,
  {},
  null,
  'chat',
  [{ user: 'alice', text: 'hello there, this is a chat message', at: new Date(), n: 42 }, new Uint8Array(64)],
  [],
];

function rate(label, fn) {
  for (let i = 0; i < 20_000; i++) fn();
  const n = 300_000;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const perSecond = Math.round(n / seconds);
  console.log(`${label.padEnd(28)} ${perSecond.toLocaleString('en-US').padStart(12)} ops/s`);
  return perSecond;
}

const packed = packr.pack(message);
const encoded = encode(message);
const a = rate('msgpackr pack', () => packr.pack(message));
const b = rate('@msgpack/msgpack encode', () => encode(message));
const c = rate('msgpackr unpack', () => unpackr.unpack(packed));
const d = rate('@msgpack/msgpack decode', () => decode(encoded));
console.log(`encode ratio msgpackr/@msgpack ${(a / b).toFixed(2)}x; decode ratio ${(c / d).toFixed(2)}x`);
console.log(`sizes: msgpackr ${packed.length} B, @msgpack/msgpack ${encoded.length} B`);
console.log(
  `RESULT ${JSON.stringify({ packPerSec: a, encodeBaselinePerSec: b, unpackPerSec: c, decodeBaselinePerSec: d, encodeRatio: +(a / b).toFixed(2), decodeRatio: +(c / d).toFixed(2) })}`,
);
