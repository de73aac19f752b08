// End-to-end encrypted media frames: the key schedule and the frame format. Pure (WebCrypto only): the
// worker (e2ee-worker.js) runs it on every encoded frame, and tests import it into a page.
//
// Keys: PBKDF2-SHA-256 (100,000 rounds) turns the meeting's passphrase into 256 bits of key material, salted
// with the room's name so the same passphrase gives other keys in another room; generation g's frame key is
// HKDF-SHA-256(material, salt: the same, info: "sluice-e2ee frame key g"), AES-GCM-128. A generation is
// re-derived from the material, never from the key before it, so any generation can be had on demand.
//
// A frame: clear prefix | AES-GCM ciphertext and its 16-byte tag | IV (12) | key index (1) | "SLE" (3).
// The clear prefix is what the bridge reads of the payload, as Jitsi's E2EE leaves it: a VP8 keyframe's 10
// bytes (frame tag, start code, width and height: simulcast layer selection), a delta frame's 3 (frame tag),
// Opus's 1 (TOC). It is the additional authenticated data: a changed header fails decryption too. The key
// index is the generation modulo 256; the magic lets a receiver without the key tell an encrypted frame.

export const IV_BYTES = 12;
export const TAG_BYTES = 16;
export const MAGIC = Object.freeze([0x53, 0x4c, 0x45]);
export const TRAILER_BYTES = IV_BYTES + 1 + MAGIC.length;
export const PBKDF2_ITERATIONS = 100000;
// A frame's key index may name at most this many generations after the last one decrypted (one per
// participant who left meanwhile): a forged index cannot make a receiver derive keys without end.
export const GENERATION_WINDOW = 64;
export const MAX_PASSPHRASE = 256;
export const KEYFRAME_CLEAR = 10;
export const DELTA_CLEAR = 3;
export const AUDIO_CLEAR = 1;

const enc = new TextEncoder();

function salt(room) {
  return enc.encode(`sluice-e2ee/${room}`);
}

/** How many leading bytes stay in clear: `kind` 'audio' | 'video', `type` the video frame's 'key' | 'delta'. */
export function clearBytes(kind, type) {
  if (kind === 'audio') return AUDIO_CLEAR;
  return type === 'key' ? KEYFRAME_CLEAR : DELTA_CLEAR;
}

/** The key material (an HKDF key) of `passphrase` in `room`. */
export async function deriveMaterial(passphrase, room) {
  if (typeof passphrase !== 'string' || !passphrase || passphrase.length > MAX_PASSPHRASE) {
    throw new Error(`the passphrase must have 1 to ${MAX_PASSPHRASE} characters`);
  }
  const pw = await crypto.subtle.importKey('raw', enc.encode(passphrase), 'PBKDF2', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: salt(room), iterations: PBKDF2_ITERATIONS }, pw, 256);
  return crypto.subtle.importKey('raw', bits, 'HKDF', false, ['deriveKey']);
}

/** Generation `generation`'s AES-GCM frame key. */
export function frameKey(material, room, generation) {
  return crypto.subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt: salt(room), info: enc.encode(`sluice-e2ee frame key ${generation}`) },
    material, { name: 'AES-GCM', length: 128 }, false, ['encrypt', 'decrypt']);
}

/** `data` (Uint8Array) encrypted with `key` of `generation`, its first `prefix` bytes in clear. */
export async function encryptFrame(key, generation, data, prefix) {
  const n = Math.min(prefix, data.length);
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES)); // random: 2^32 frames per key, all senders'
  const body = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: data.subarray(0, n) }, key, data.subarray(n)));
  const out = new Uint8Array(n + body.length + TRAILER_BYTES);
  out.set(data.subarray(0, n));
  out.set(body, n);
  out.set(iv, n + body.length);
  out[n + body.length + IV_BYTES] = generation & 0xff;
  out.set(MAGIC, out.length - MAGIC.length);
  return out;
}

/** Whether `data` carries our trailer (an encrypted frame). */
export function isEncrypted(data) {
  if (data.length < TAG_BYTES + TRAILER_BYTES) return false;
  return MAGIC.every((b, i) => data[data.length - MAGIC.length + i] === b);
}

/** An encrypted frame's parts ({clear, body, iv, index}), or null when `data` is not one. */
export function parseFrame(data, prefix) {
  if (!isEncrypted(data)) return null;
  const end = data.length - TRAILER_BYTES;
  const n = Math.min(prefix, end - TAG_BYTES);
  return { clear: data.subarray(0, n), body: data.subarray(n, end), iv: data.subarray(end, end + IV_BYTES), index: data[end + IV_BYTES] };
}

/**
 * The generation a key index names, seen from the last generation decrypted: up to GENERATION_WINDOW ahead,
 * else behind (a late frame, or a sender who joined after others left and counts from fewer leaves);
 * null below 0.
 */
export function generationOf(index, last) {
  const ahead = (index - last) & 0xff;
  if (ahead <= GENERATION_WINDOW) return last + ahead;
  const g = last - ((last - index) & 0xff);
  return g >= 0 ? g : null;
}

/** The plain frame of `parsed` (parseFrame); rejects when the key is wrong or a byte was changed. */
export async function decryptFrame(key, parsed) {
  const plain = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: parsed.iv, additionalData: parsed.clear }, key, parsed.body));
  const out = new Uint8Array(parsed.clear.length + plain.length);
  out.set(parsed.clear);
  out.set(plain, parsed.clear.length);
  return out;
}

// RFC 2198 redundant audio (RED): the bridge reads its block headers (to strip a packet to its primary
// for receivers without RED), so those stay in clear and each block is encrypted as a frame of its own;
// a primary stripped out by the bridge is then a whole encrypted Opus frame.
const MAX_RED_BLOCKS = 16;
const MAX_RED_LENGTH = 1023; // a block length has 10 bits

/** An RFC 2198 payload's headers ({pt, offset}) and blocks (the primary last), or null when it does not parse. */
export function parseRed(data) {
  const heads = [];
  const lengths = [];
  let i = 0;
  for (;;) {
    if (i >= data.length || heads.length >= MAX_RED_BLOCKS) return null;
    const b = data[i];
    if (!(b & 0x80)) {
      heads.push({ pt: b & 0x7f, offset: 0 });
      i += 1;
      break;
    }
    if (i + 4 > data.length) return null;
    heads.push({ pt: b & 0x7f, offset: (data[i + 1] << 6) | (data[i + 2] >> 2) });
    lengths.push(((data[i + 2] & 0x03) << 8) | data[i + 3]);
    i += 4;
  }
  const blocks = [];
  for (const n of lengths) {
    if (i + n > data.length) return null;
    blocks.push(data.subarray(i, i + n));
    i += n;
  }
  blocks.push(data.subarray(i));
  return { heads, blocks };
}

/** The RFC 2198 payload of `heads` and `blocks` (parseRed's); null when a redundant block is too long. */
export function buildRed(heads, blocks) {
  if (blocks.slice(0, -1).some((b) => b.length > MAX_RED_LENGTH)) return null;
  const size = 4 * (heads.length - 1) + 1 + blocks.reduce((n, b) => n + b.length, 0);
  const out = new Uint8Array(size);
  let i = 0;
  heads.forEach((hd, k) => {
    if (k === heads.length - 1) {
      out[i] = hd.pt & 0x7f;
      i += 1;
      return;
    }
    const n = blocks[k].length;
    out.set([0x80 | (hd.pt & 0x7f), (hd.offset >> 6) & 0xff, ((hd.offset & 0x3f) << 2) | (n >> 8), n & 0xff], i);
    i += 4;
  });
  for (const b of blocks) {
    out.set(b, i);
    i += b.length;
  }
  return out;
}
