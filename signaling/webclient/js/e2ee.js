// End-to-end encryption, the page's side: one worker (e2ee-worker.js) holds the keys and transforms every
// encoded frame of the session's senders and receivers, from the session's start (conference.js): until a
// passphrase is set it passes our frames through, and tells others' encrypted frames from clear ones.
// Presence carries <jitsi_participant_e2ee.enabled>true</…> as Jitsi Meet's clients send it.

import { MAX_PASSPHRASE } from './e2ee-frame.js';

export const E2EE_PRESENCE = 'jitsi_participant_e2ee.enabled';

/** Whether this browser can transform encoded frames in a worker. */
export function e2eeSupported() {
  return typeof globalThis.RTCRtpScriptTransform === 'function';
}

/** Whether a presence stanza says its sender encrypts. */
export function e2eeOf(st) {
  const el = [...st.children].find((c) => c.localName === E2EE_PRESENCE);
  return (el?.textContent ?? '').trim() === 'true';
}

/** Why `passphrase` cannot be used ('' when it can). */
export function passphraseProblem(passphrase) {
  if (!passphrase) return 'Please enter a passphrase.';
  if (passphrase.length > MAX_PASSPHRASE) return `The passphrase is too long: ${passphrase.length} characters, the limit is ${MAX_PASSPHRASE}.`;
  return '';
}

export class E2ee extends EventTarget {
  constructor(room) {
    super();
    this.room = room;
    this.enabled = false;
    this.worker = new Worker(new URL('./e2ee-worker.js', import.meta.url), { type: 'module' });
    this.states = new Map(); // receiver id (its m-line's mid) → 'clear' | 'decrypted' | 'no-key' | 'wrong-key'
    this.attached = new WeakSet(); // senders and receivers with our transform
    this.pending = new Map(); // stats requests: seq → resolve
    this.seq = 0;
    this.worker.onmessage = ({ data }) => {
      if (data.type === 'state') {
        this.states.set(data.id, data.state);
        this.dispatchEvent(new CustomEvent('state', { detail: data }));
      } else if (data.type === 'stats') {
        this.pending.get(data.seq)?.(data);
        this.pending.delete(data.seq);
      }
    };
  }

  /** Turns encryption on with `passphrase`, or off with ''. */
  setPassphrase(passphrase) {
    const problem = passphrase ? passphraseProblem(passphrase) : '';
    if (problem) throw new Error(problem);
    this.enabled = Boolean(passphrase);
    this.worker.postMessage({ type: 'passphrase', passphrase, room: this.room });
  }

  /** Someone left: our senders move to the next key generation (docs/security.md says what that gives). */
  rotate() {
    if (this.enabled) this.worker.postMessage({ type: 'rotate' });
  }

  /** Tests: the worker remembers bytes after the clear prefix of what it sends and receives. */
  record(on) {
    this.worker.postMessage({ type: 'record', on });
  }

  /** Puts our transform on `sender` (of `kind`), unless it has it. */
  attachSender(sender, kind) {
    if (this.attached.has(sender)) return;
    sender.transform = new RTCRtpScriptTransform(this.worker, { side: 'send', kind });
    this.attached.add(sender);
  }

  /** Puts our transform on every sender and receiver of `pc` that has none yet. */
  attach(pc) {
    for (const t of pc.getTransceivers()) {
      if (t.stopped || t.mid === null) continue;
      const kind = t.receiver.track.kind;
      this.attachSender(t.sender, kind);
      if (!this.attached.has(t.receiver)) {
        t.receiver.transform = new RTCRtpScriptTransform(this.worker, { side: 'receive', kind, id: t.mid });
        this.attached.add(t.receiver);
      }
    }
  }

  /** The worker's counters, generation and receivers' states (and what it recorded). */
  stats() {
    const seq = ++this.seq;
    return new Promise((resolve) => {
      this.pending.set(seq, resolve);
      this.worker.postMessage({ type: 'stats', seq });
    });
  }

  close() {
    this.worker.terminate();
    for (const resolve of this.pending.values()) resolve(null);
    this.pending.clear();
  }
}
