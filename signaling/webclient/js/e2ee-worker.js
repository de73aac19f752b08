// The E2EE worker: every encoded frame of the page's senders and receivers passes here
// (RTCRtpScriptTransform), once a transform is attached (e2ee.js). Senders encrypt while a passphrase is
// set; receivers decrypt what carries our trailer, pass clear frames on, and drop what they cannot decrypt
// (no key, or another one), telling the page, which shows the "encrypted" placeholder: the decoder never
// gets ciphertext, so there is no garbage to see or hear.

import {
  AUDIO_CLEAR, GENERATION_WINDOW, buildRed, clearBytes, decryptFrame, deriveMaterial, encryptFrame, frameKey, generationOf,
  parseFrame, parseRed,
} from './e2ee-frame.js';

const KEY_CACHE = 8; // frame keys kept (the newest generations asked for)
const RECORD = 2000; // frames remembered per stream while recording (tests)
const WINDOW_BYTES = 16; // bytes after the clear prefix a recorded frame keeps (with the prefix)

let room = '';
let enabled = false; // a passphrase is set: senders encrypt (frames wait for its key, never go in clear)
let material = null; // Promise of the passphrase's key material
let epoch = 0; // changes with the passphrase: keys of an older one are not used
let generation = 0; // our senders' key generation
const keys = new Map(); // generation → Promise<CryptoKey> (of the current material)
const receivers = new Map(); // transform id → {state, last (generation), kind}
const counters = { sent: 0, encrypted: 0, decrypted: 0, clear: 0, noKey: 0, failed: 0, unsupported: 0, dropped: 0, redSent: 0, redReceived: 0 };
let recording = false;
// Video frames as they enter the transform (before encryption, before decryption): {head: the clear prefix
// and WINDOW_BYTES after it, tail: the last 3 bytes}, in hex.
const record = { sent: [], received: new Map() };

function keyOf(g) {
  let k = keys.get(g);
  if (!k) {
    k = material.then((m) => frameKey(m, room, g));
    k.catch(() => {});
    keys.set(g, k);
    while (keys.size > KEY_CACHE) keys.delete(Math.min(...keys.keys()));
  }
  return k;
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

function remember(list, data, prefix) {
  if (data.length < prefix + WINDOW_BYTES) return;
  list.push({ head: hex(data.subarray(0, prefix + WINDOW_BYTES)), tail: hex(data.subarray(data.length - 3)) });
  if (list.length > RECORD) list.shift();
}

function setState(id, r, state) {
  if (r.state === state) return;
  r.state = state;
  self.postMessage({ type: 'state', id, kind: r.kind, state });
}

function codecOf(frame) {
  return (frame.getMetadata?.().mimeType ?? '').toLowerCase();
}

async function send(kind, frame, controller) {
  counters.sent += 1;
  const data = new Uint8Array(frame.data);
  const prefix = clearBytes(kind, frame.type);
  if (recording && kind === 'video') remember(record.sent, data, prefix);
  if (!enabled) {
    controller.enqueue(frame);
    return;
  }
  // H.264 and AV1 packetizers parse the frame: ciphertext would break them. Sent as nothing, never clear.
  const codec = codecOf(frame);
  if (codec && !['video/vp8', 'video/vp9', 'audio/opus', 'audio/red'].includes(codec)) {
    counters.unsupported += 1;
    return;
  }
  const red = codec === 'audio/red' ? parseRed(data) : null;
  if (codec === 'audio/red' && !red) {
    counters.unsupported += 1;
    return;
  }
  const mine = epoch;
  const g = generation;
  try {
    const key = await keyOf(g);
    if (mine !== epoch) return;
    if (red) {
      counters.redSent += 1;
      // Each block a frame of its own; redundancy that no longer fits a block length goes.
      const blocks = await Promise.all(red.blocks.map((b) => encryptFrame(key, g, b, AUDIO_CLEAR)));
      frame.data = (buildRed(red.heads, blocks) ?? buildRed(red.heads.slice(-1), blocks.slice(-1))).buffer;
    } else {
      frame.data = (await encryptFrame(key, g, data, prefix)).buffer;
    }
    counters.encrypted += 1;
    controller.enqueue(frame);
  } catch {
    counters.dropped += 1; // the key is not ready yet: nothing leaves in clear
  }
}

async function receive(id, kind, frame, controller) {
  let r = receivers.get(id);
  if (!r) {
    r = { state: null, last: 0, kind };
    receivers.set(id, r);
  }
  const data = new Uint8Array(frame.data);
  const prefix = clearBytes(kind, frame.type);
  if (recording && kind === 'video') {
    if (!record.received.has(id)) record.received.set(id, []);
    remember(record.received.get(id), data, prefix);
  }
  const red = codecOf(frame) === 'audio/red' ? parseRed(data) : null;
  if (red) counters.redReceived += 1;
  const opened = red ? await Promise.all(red.blocks.map((b) => open(r, b, AUDIO_CLEAR))) : [await open(r, data, prefix)];
  // One block that cannot be read spoils the packet: nothing of it is decoded.
  const state = ['no-key', 'wrong-key', 'decrypted', 'clear'].find((st) => opened.some((o) => o.state === st));
  counters[{ 'no-key': 'noKey', 'wrong-key': 'failed', decrypted: 'decrypted', clear: 'clear' }[state]] += 1;
  setState(id, r, state);
  if (state === 'no-key' || state === 'wrong-key') return;
  if (state === 'decrypted') frame.data = (red ? buildRed(red.heads, opened.map((o) => o.data)) : opened[0].data).buffer;
  controller.enqueue(frame);
}

/** One frame (or RED block) as received: {state: 'clear' | 'decrypted' | 'no-key' | 'wrong-key', data}. */
async function open(r, data, prefix) {
  const parsed = parseFrame(data, prefix);
  if (!parsed) return { state: 'clear', data };
  if (!material) return { state: 'no-key', data: null };
  const g = generationOf(parsed.index, r.last);
  if (g === null) return { state: 'wrong-key', data: null };
  try {
    const plain = await decryptFrame(await keyOf(g), parsed);
    if (g > r.last && g - r.last <= GENERATION_WINDOW) r.last = g;
    return { state: 'decrypted', data: plain };
  } catch {
    return { state: 'wrong-key', data: null };
  }
}

self.onrtctransform = (event) => {
  const t = event.transformer;
  const { side, kind, id } = t.options;
  const transform = side === 'send' ? (f, c) => send(kind, f, c) : (f, c) => receive(String(id), kind, f, c);
  t.readable.pipeThrough(new TransformStream({ transform })).pipeTo(t.writable).catch(() => {});
};

self.onmessage = ({ data }) => {
  switch (data?.type) {
    case 'passphrase':
      epoch += 1;
      keys.clear();
      room = String(data.room ?? '');
      enabled = Boolean(data.passphrase);
      material = enabled ? deriveMaterial(data.passphrase, room) : null;
      material?.catch(() => {});
      // Receivers start from generation 0 again under a new passphrase.
      for (const r of receivers.values()) r.last = 0;
      generation = 0;
      break;
    case 'rotate':
      if (enabled) generation += 1;
      break;
    case 'record':
      recording = Boolean(data.on);
      break;
    case 'stats':
      self.postMessage({
        type: 'stats', seq: data.seq, enabled, generation, counters: { ...counters },
        receivers: Object.fromEntries([...receivers].map(([id, r]) => [id, { state: r.state, generation: r.last, kind: r.kind }])),
        record: recording ? { sent: [...record.sent], received: Object.fromEntries([...record.received].map(([id, l]) => [id, [...l]])) } : null,
      });
      break;
    default:
      break;
  }
};
