// The bridge channel over colibri-ws (docs/jitsi-protocol.md §4): JSON messages with a "colibriClass"
// between this page and the bridge, on the WebSocket whose URL the session-initiate's transport carries
// (<web-socket xmlns="http://jitsi.org/protocol/colibri" url>). No DOM.
//
// On open we send ClientHello; the bridge answers ServerHello. It tells us which video sources it forwards
// (ForwardedSources), who the dominant speaker is (DominantSpeakerEndpointChangeEvent) and the largest
// height anyone wants of a source we send (SenderSourceConstraints, checked here and acted on by
// conference.js). We tell it what our layout needs (ReceiverVideoConstraints). A dropped socket is reopened
// after 1 s, doubling up to 60 s (lib-jitsi-meet's backoff), reset once a socket opens; close() stops for
// good.

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60000;
// Bigger frames than this are not ours to parse (the bridge's own bound is 64k characters).
const MAX_FRAME_CHARS = 64 * 1024;
// Our source names are "<nick>-v0"; anything much longer is not one of ours.
const MAX_SOURCE_NAME_CHARS = 256;

export class BridgeChannel extends EventTarget {
  /** `url`: the absolute ws:// or wss:// URL from the session-initiate. */
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.closed = false;
    this.backoff = MIN_BACKOFF_MS;
    this.timer = null;
    this.constraints = null; // the last ReceiverVideoConstraints, sent again on every (re)open
    this.state = {
      open: false,
      opens: 0,
      serverHello: 0,
      serverVersion: null,
      forwardedSources: null,
      dominantSpeaker: null,
      previousSpeakers: [],
      received: {}, // colibriClass → count
      sent: {},
      errors: 0,
      reconnects: [], // delays (ms) of the reconnects scheduled so far
      constraintsSent: null,
    };
    this._connect();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _connect() {
    if (this.closed) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      // A URL the browser refuses (bad scheme, blocked port) will not get better by retrying.
      this.state.errors += 1;
      console.warn('bridge channel: cannot open', this.url, e.message);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.backoff = MIN_BACKOFF_MS;
      this.state.open = true;
      this.state.opens += 1;
      this.send({ colibriClass: 'ClientHello' });
      if (this.constraints) this.send(this.constraints);
      this._emit('open', {});
    };
    ws.onmessage = (e) => {
      if (ws === this.ws) this.receive(e.data);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.ws = null;
      const wasOpen = this.state.open;
      this.state.open = false;
      if (wasOpen) this._emit('close', { code: e.code, reason: e.reason });
      this._retry();
    };
    // onerror is always followed by onclose, which retries.
    ws.onerror = () => {
      if (ws === this.ws) this.state.errors += 1;
    };
  }

  _retry() {
    if (this.closed || this.timer !== null) return;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.state.reconnects.push(delay);
    this.timer = setTimeout(() => {
      this.timer = null;
      this._connect();
    }, delay);
  }

  /** One frame from the bridge. */
  receive(data) {
    if (typeof data !== 'string' || data.length > MAX_FRAME_CHARS) {
      this.state.errors += 1;
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this.state.errors += 1;
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.colibriClass !== 'string') {
      this.state.errors += 1;
      return;
    }
    const cls = msg.colibriClass;
    this.state.received[cls] = (this.state.received[cls] ?? 0) + 1;
    switch (cls) {
      case 'ServerHello':
        this.state.serverHello += 1;
        this.state.serverVersion = typeof msg.version === 'string' ? msg.version : null;
        this._emit('server-hello', { version: this.state.serverVersion });
        break;
      case 'ForwardedSources': {
        const names = Array.isArray(msg.forwardedSources) ? msg.forwardedSources.filter((n) => typeof n === 'string') : [];
        this.state.forwardedSources = names;
        this._emit('forwarded-sources', names);
        break;
      }
      case 'DominantSpeakerEndpointChangeEvent': {
        const id = typeof msg.dominantSpeakerEndpoint === 'string' ? msg.dominantSpeakerEndpoint : null;
        const previous = Array.isArray(msg.previousSpeakers) ? msg.previousSpeakers.filter((n) => typeof n === 'string') : [];
        this.state.dominantSpeaker = id;
        this.state.previousSpeakers = previous;
        this._emit('dominant-speaker', { id, previous, silence: msg.silence === true });
        break;
      }
      case 'SenderSourceConstraints': {
        // maxHeight: a height in pixels (0: nobody wants the source), or -1 for no limit as elsewhere in
        // the protocol. Anything else is counted as an error and ignored.
        const name = msg.sourceName;
        const h = msg.maxHeight;
        if (typeof name !== 'string' || !name || name.length > MAX_SOURCE_NAME_CHARS
            || typeof h !== 'number' || !Number.isFinite(h) || (h < 0 && h !== -1)) {
          this.state.errors += 1;
          break;
        }
        this._emit('sender-constraints', { sourceName: name, maxHeight: h });
        break;
      }
      default:
        // EndpointMessage, ConnectionStats...: counted, otherwise unused here.
        this._emit('message', msg);
    }
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    this.state.sent[msg.colibriClass] = (this.state.sent[msg.colibriClass] ?? 0) + 1;
    if (msg.colibriClass === 'ReceiverVideoConstraints') this.state.constraintsSent = msg;
    return true;
  }

  /**
   * What the layout needs (a whole ReceiverVideoConstraints: the bridge merges field by field, so every
   * field we use is always present). Sent now if open and different from the last; remembered for reopens.
   */
  setConstraints(constraints) {
    const msg = { colibriClass: 'ReceiverVideoConstraints', ...constraints };
    const same = this.constraints && JSON.stringify(this.constraints) === JSON.stringify(msg);
    this.constraints = msg;
    if (!same) this.send(msg);
  }

  close() {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    this.state.open = false;
    if (ws) ws.close(1000, 'leaving');
  }

  snapshot() {
    return { url: this.url, closed: this.closed, ...structuredClone(this.state) };
  }
}
