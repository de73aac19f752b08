// Jingle ⇄ SDP translation for a Jitsi-style focus (docs/jitsi-protocol.md §5.4–5.5).
//
// Pure: no DOM document, no window, no XMPP. Input stanzas are W3C DOM Elements (from DOMParser or
// Strophe), outputs are plain objects, SDP strings and XML strings, so this module is testable alone.
//
// The focus is the offerer. We build a unified-plan offer from its session-initiate:
//   - m-line "audio" and "video" (the Jingle content names) are sendrecv: our own tracks go there;
//   - every remote source (one per owner and kind, with the SSRCs signalled: a simulcast sender's primary
//     and RTX, since the focus strips simulcast and the bridge rewrites the layer it forwards onto the
//     primary) gets its own m-line, sendonly from the focus's side, with a=ssrc lines: the bridge sends no
//     MID header extension, so Chrome can only route packets to a receiver by signalled SSRC;
//   - removed sources keep their m-line (m-lines never disappear in unified plan) with port 0.
// Our own answer is made simulcast by munging (simulcastPlan / withSimulcast at the end of this file).

export const NS = Object.freeze({
  JINGLE: 'urn:xmpp:jingle:1',
  RTP: 'urn:xmpp:jingle:apps:rtp:1',
  RTP_FB: 'urn:xmpp:jingle:apps:rtp:rtcp-fb:0',
  RTP_HDREXT: 'urn:xmpp:jingle:apps:rtp:rtp-hdrext:0',
  SSMA: 'urn:xmpp:jingle:apps:rtp:ssma:0',
  ICE_UDP: 'urn:xmpp:jingle:transports:ice-udp:1',
  DTLS: 'urn:xmpp:jingle:apps:dtls:0',
  SCTP: 'urn:xmpp:jingle:transports:dtls-sctp:1',
  GROUPING: 'urn:xmpp:jingle:apps:grouping:0',
  JITMEET: 'http://jitsi.org/jitmeet',
  FOCUS: 'http://jitsi.org/protocol/focus',
  START_MUTED: 'http://jitsi.org/jitmeet/start-muted',
  COLIBRI: 'http://jitsi.org/protocol/colibri',
});

export class JingleError extends Error {}

// ---------------------------------------------------------------------------------------------------
// XML helpers (Element in, string out)

function kids(el, name, ns) {
  const out = [];
  if (!el) return out;
  for (const c of el.children) {
    if ((name === undefined || c.localName === name) && (ns === undefined || c.namespaceURI === ns)) out.push(c);
  }
  return out;
}

function kid(el, name, ns) {
  return kids(el, name, ns)[0] || null;
}

function attr(el, name) {
  const v = el.getAttribute(name);
  return v === null ? undefined : v;
}

function int(el, name) {
  const v = attr(el, name);
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v)) throw new JingleError(`attribute ${name}="${v}" on <${el.localName}> is not an integer`);
  return Number(v);
}

function escapeXml(s) {
  return String(s).replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]);
}

// A tiny element tree: {name, attrs, children, text}; attrs with undefined values are left out.
export function el(name, attrs = {}, children = [], text) {
  return { name, attrs, children: children.filter(Boolean), text };
}

export function toXml(node) {
  const attrs = Object.entries(node.attrs)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => ` ${k}="${escapeXml(v)}"`)
    .join('');
  const inner = (node.text !== undefined ? escapeXml(node.text) : '') + node.children.map(toXml).join('');
  return inner ? `<${node.name}${attrs}>${inner}</${node.name}>` : `<${node.name}${attrs}/>`;
}

// ---------------------------------------------------------------------------------------------------
// Jingle → model

function parsePayloadType(pt) {
  const params = kids(pt, 'parameter').map((p) => ({ name: attr(p, 'name') ?? '', value: attr(p, 'value') ?? '' }));
  return {
    id: int(pt, 'id'),
    name: attr(pt, 'name') ?? '',
    clockrate: int(pt, 'clockrate'),
    channels: int(pt, 'channels'),
    ptime: int(pt, 'ptime'),
    maxptime: int(pt, 'maxptime'),
    parameters: params,
    rtcpFbs: kids(pt, 'rtcp-fb', NS.RTP_FB).map((f) => ({ type: attr(f, 'type'), subtype: attr(f, 'subtype') })),
  };
}

function parseSourceEl(s) {
  const params = {};
  for (const p of kids(s, 'parameter')) params[attr(p, 'name')] = attr(p, 'value') ?? '';
  const info = kid(s, 'ssrc-info', NS.JITMEET);
  return {
    ssrc: int(s, 'ssrc'),
    name: attr(s, 'name'),
    videoType: attr(s, 'videoType'),
    msid: params.msid,
    owner: info ? attr(info, 'owner') : undefined,
  };
}

function parseGroupEl(g) {
  return { semantics: attr(g, 'semantics'), ssrcs: kids(g, 'source').map((s) => int(s, 'ssrc')) };
}

export function parseDescription(d) {
  if (!d) return null;
  return {
    media: attr(d, 'media'),
    maxptime: int(d, 'maxptime'),
    payloadTypes: kids(d, 'payload-type').map(parsePayloadType),
    extmaps: kids(d, 'rtp-hdrext', NS.RTP_HDREXT).map((h) => ({ id: int(h, 'id'), uri: attr(h, 'uri'), senders: attr(h, 'senders') })),
    extmapAllowMixed: kids(d, 'extmap-allow-mixed').length > 0,
    rtcpMux: kids(d, 'rtcp-mux').length > 0,
    sources: kids(d, 'source', NS.SSMA).map(parseSourceEl),
    ssrcGroups: kids(d, 'ssrc-group', NS.SSMA).map(parseGroupEl),
  };
}

export function parseCandidateEl(c) {
  return {
    foundation: attr(c, 'foundation'),
    component: int(c, 'component') ?? 1,
    protocol: (attr(c, 'protocol') ?? 'udp').toLowerCase(),
    priority: int(c, 'priority'),
    ip: attr(c, 'ip'),
    port: int(c, 'port'),
    type: attr(c, 'type') ?? 'host',
    relAddr: attr(c, 'rel-addr'),
    relPort: int(c, 'rel-port'),
    tcptype: attr(c, 'tcptype'),
    generation: int(c, 'generation') ?? 0,
    network: int(c, 'network'),
    id: attr(c, 'id'),
  };
}

export function parseTransport(t) {
  if (!t) return null;
  const sctp = kid(t, 'sctpmap', NS.SCTP);
  return {
    ufrag: attr(t, 'ufrag'),
    pwd: attr(t, 'pwd'),
    rtcpMux: kids(t, 'rtcp-mux').length > 0,
    fingerprints: kids(t, 'fingerprint', NS.DTLS).map((f) => ({
      hash: attr(f, 'hash'),
      setup: attr(f, 'setup'),
      value: f.textContent.trim(),
    })),
    candidates: kids(t, 'candidate').map(parseCandidateEl),
    sctp: sctp ? { number: int(sctp, 'number'), protocol: attr(sctp, 'protocol'), streams: int(sctp, 'streams') } : null,
    // The bridge channel (colibri-ws, §4): absolute ws:// or wss:// URLs, in the bridge's order.
    webSockets: kids(t, 'web-socket', NS.COLIBRI).map((w) => attr(w, 'url')).filter((u) => /^wss?:\/\//.test(u ?? '')),
    // An in-place ICE restart's transport (§5.5): a positive integer, else null.
    iceGeneration: /^[1-9][0-9]{0,9}$/.test(attr(t, 'ice-generation') ?? '') ? Number(attr(t, 'ice-generation')) : null,
  };
}

// Compact JSON sources (§5.4): {"sources": {owner: [videoSources, videoGroups, audioSources, audioGroups?]}}.
export function parseJsonSources(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new JingleError(`json-message is not JSON: ${e.message}`);
  }
  const out = [];
  const sources = doc && doc.sources;
  if (!sources || typeof sources !== 'object') return out;
  const src = (s, owner, media) => {
    if (!s || typeof s.s !== 'number' || !Number.isInteger(s.s) || s.s < 0 || s.s > 0xffffffff) {
      throw new JingleError(`bad source in json-message for ${owner}: ${JSON.stringify(s)}`);
    }
    return { ssrc: s.s, name: s.n, msid: s.m, videoType: s.v === 'd' ? 'desktop' : media === 'video' ? 'camera' : undefined, owner };
  };
  const grp = (g, owner) => {
    if (!Array.isArray(g) || g.length < 2 || !g.slice(1).every((x) => Number.isInteger(x))) {
      throw new JingleError(`bad ssrc group in json-message for ${owner}: ${JSON.stringify(g)}`);
    }
    const semantics = { s: 'SIM', f: 'FID' }[g[0]] ?? String(g[0]);
    return { semantics, ssrcs: g.slice(1) };
  };
  for (const [owner, v] of Object.entries(sources)) {
    if (!Array.isArray(v)) throw new JingleError(`json-message sources for ${owner} are not a list`);
    const [vs = [], vg = [], as = [], ag = []] = v;
    out.push({ owner, media: 'video', sources: vs.map((s) => src(s, owner, 'video')), groups: vg.map((g) => grp(g, owner)) });
    out.push({ owner, media: 'audio', sources: as.map((s) => src(s, owner, 'audio')), groups: ag.map((g) => grp(g, owner)) });
  }
  return out;
}

// Sources of a content's description (inline <source> + ssrc-info owner) in the json form.
function inlineSourceSets(contents) {
  const out = [];
  for (const c of contents) {
    const d = c.description;
    if (!d || d.sources.length === 0) continue;
    const byOwner = new Map();
    for (const s of d.sources) {
      const owner = s.owner ? ownerFromJid(s.owner) : 'unknown';
      if (!byOwner.has(owner)) byOwner.set(owner, { owner, media: d.media, sources: [], groups: [] });
      byOwner.get(owner).sources.push({ ...s, owner });
    }
    for (const g of d.ssrcGroups) {
      const first = d.sources.find((s) => g.ssrcs.includes(s.ssrc));
      if (!first) continue;
      byOwner.get(first.owner ? ownerFromJid(first.owner) : 'unknown').groups.push(g);
    }
    out.push(...byOwner.values());
  }
  return out;
}

// "room@conference.x/abcd1234" → "abcd1234"; an endpoint id stays as it is.
export function ownerFromJid(owner) {
  const i = owner.indexOf('/');
  return i >= 0 ? owner.slice(i + 1) : owner;
}

// One remote source per (owner, media, name): its SSRCs (primary first) and their groups.
export function groupRemoteSources(sets) {
  const out = [];
  for (const set of sets) {
    const byKey = new Map();
    for (const s of set.sources) {
      const key = s.name || s.msid || `${set.owner}-${set.media}-${s.ssrc}`;
      if (!byKey.has(key)) {
        byKey.set(key, { key, owner: set.owner, media: set.media, name: s.name, msid: s.msid, videoType: s.videoType, ssrcs: [], groups: [] });
      }
      const entry = byKey.get(key);
      if (!entry.ssrcs.includes(s.ssrc)) entry.ssrcs.push(s.ssrc);
      if (!entry.msid && s.msid) entry.msid = s.msid;
    }
    for (const g of set.groups) {
      const entry = [...byKey.values()].find((e) => g.ssrcs.some((x) => e.ssrcs.includes(x)));
      if (!entry) throw new JingleError(`ssrc-group ${g.semantics} ${g.ssrcs.join(' ')} names no known source of ${set.owner}`);
      for (const x of g.ssrcs) if (!entry.ssrcs.includes(x)) entry.ssrcs.push(x);
      entry.groups.push(g);
    }
    // The SSRC listed first in a FID/SIM group is a primary; keep primaries first (RTX after).
    for (const e of byKey.values()) {
      const secondary = new Set();
      for (const g of e.groups) {
        if (g.semantics === 'FID') g.ssrcs.slice(1).forEach((x) => secondary.add(x));
      }
      e.ssrcs.sort((a, b) => Number(secondary.has(a)) - Number(secondary.has(b)));
      out.push(e);
    }
  }
  return out;
}

export function parseJingle(jingle) {
  if (!jingle || jingle.localName !== 'jingle' || jingle.namespaceURI !== NS.JINGLE) {
    throw new JingleError('not a urn:xmpp:jingle:1 <jingle> element');
  }
  const action = attr(jingle, 'action');
  const sid = attr(jingle, 'sid');
  if (!action || !sid) throw new JingleError('<jingle> lacks action or sid');
  const contents = kids(jingle, 'content').map((c) => {
    const description = parseDescription(kid(c, 'description', NS.RTP));
    const transport = parseTransport(kid(c, 'transport', NS.ICE_UDP));
    return {
      name: attr(c, 'name'),
      creator: attr(c, 'creator') ?? 'initiator',
      senders: attr(c, 'senders') ?? 'both',
      media: description ? description.media : transport && transport.sctp ? 'application' : undefined,
      description,
      transport,
    };
  });
  for (const c of contents) if (!c.name) throw new JingleError('<content> without name');
  const groups = kids(jingle, 'group', NS.GROUPING).map((g) => ({
    semantics: attr(g, 'semantics'),
    contents: kids(g, 'content').map((c) => attr(c, 'name')),
  }));
  const bs = kid(jingle, 'bridge-session', NS.FOCUS);
  const json = kid(jingle, 'json-message', NS.JITMEET);
  const reasonEl = kid(jingle, 'reason');
  const sm = kid(jingle, 'startmuted', NS.START_MUTED);
  const jsonSets = json ? parseJsonSources(json.textContent) : null;
  const sourceSets = inlineSourceSets(contents).concat(jsonSets ?? []);
  return {
    action,
    sid,
    initiator: attr(jingle, 'initiator'),
    responder: attr(jingle, 'responder'),
    contents,
    groups,
    bridgeSession: bs ? { id: attr(bs, 'id'), region: attr(bs, 'region'), restart: attr(bs, 'restart') === 'true', iceRestart: attr(bs, 'ice-restart') === 'true' } : null,
    reason: reasonEl ? { condition: reasonEl.children[0] ? reasonEl.children[0].localName : undefined, text: kid(reasonEl, 'text')?.textContent } : null,
    startMuted: sm ? { audio: attr(sm, 'audio') === 'true', video: attr(sm, 'video') === 'true' } : null,
    sources: groupRemoteSources(sourceSets),
    jsonSources: jsonSets,
  };
}

/** The compact JSON form of source sets (inverse of parseJsonSources). */
export function encodeJsonSources(sets) {
  const out = {};
  const src = (s) => {
    const o = { s: s.ssrc };
    if (s.name !== undefined) o.n = s.name;
    if (s.msid !== undefined) o.m = s.msid;
    if (s.videoType === 'desktop') o.v = 'd';
    return o;
  };
  const grp = (g) => [{ SIM: 's', FID: 'f' }[g.semantics] ?? g.semantics, ...g.ssrcs];
  for (const set of sets) {
    const entry = (out[set.owner] ??= [[], [], [], []]);
    const base = set.media === 'video' ? 0 : 2;
    entry[base].push(...set.sources.map(src));
    entry[base + 1].push(...set.groups.map(grp));
  }
  return JSON.stringify({ sources: out });
}

// ---------------------------------------------------------------------------------------------------
// SDP writing

export function candidateToSdp(c) {
  let s = `candidate:${c.foundation} ${c.component} ${c.protocol} ${c.priority} ${c.ip} ${c.port} typ ${c.type}`;
  if (c.relAddr !== undefined && c.relPort !== undefined) s += ` raddr ${c.relAddr} rport ${c.relPort}`;
  if (c.tcptype) s += ` tcptype ${c.tcptype}`;
  s += ` generation ${c.generation ?? 0}`;
  return s;
}

export function candidateFromSdp(line) {
  const v = line.replace(/^a=/, '').replace(/^candidate:/, '').trim().split(/\s+/);
  if (v.length < 8 || v[6] !== 'typ') throw new JingleError(`bad candidate line: ${line}`);
  const c = {
    foundation: v[0],
    component: Number(v[1]),
    protocol: v[2].toLowerCase(),
    priority: Number(v[3]),
    ip: v[4],
    port: Number(v[5]),
    type: v[7],
    generation: 0,
  };
  for (let i = 8; i + 1 < v.length; i += 2) {
    const [k, val] = [v[i], v[i + 1]];
    if (k === 'raddr') c.relAddr = val;
    else if (k === 'rport') c.relPort = Number(val);
    else if (k === 'tcptype') c.tcptype = val;
    else if (k === 'generation') c.generation = Number(val);
  }
  return c;
}

function fmtpOf(pt) {
  return pt.parameters.map((p) => (p.name ? `${p.name}=${p.value}` : p.value)).join(';');
}

// Payload types that carry no media of their own: they take no bitrate hint.
const NOT_MEDIA = new Set(['rtx', 'red', 'ulpfec', 'flexfec-03', 'telephone-event', 'cn']);

export const TRANSPORT_CC_URI = 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01';

function codecLines(desc, startBitrateKbps, transportCc = true) {
  const lines = [];
  for (const pt of desc.payloadTypes) {
    lines.push(`a=rtpmap:${pt.id} ${pt.name}/${pt.clockrate}${pt.channels && pt.channels !== 1 ? `/${pt.channels}` : ''}`);
    const hint = startBitrateKbps && desc.media === 'video' && !NOT_MEDIA.has(pt.name.toLowerCase());
    const params = hint ? [...pt.parameters, { name: 'x-google-start-bitrate', value: String(startBitrateKbps) }] : pt.parameters;
    if (params.length) lines.push(`a=fmtp:${pt.id} ${fmtpOf({ parameters: params })}`);
    for (const fb of pt.rtcpFbs) {
      if (!transportCc && fb.type === 'transport-cc') continue;
      lines.push(`a=rtcp-fb:${pt.id} ${fb.type}${fb.subtype ? ` ${fb.subtype}` : ''}`);
    }
  }
  return lines;
}

function transportLines(t, withCandidates) {
  const lines = [];
  if (t.ufrag) lines.push(`a=ice-ufrag:${t.ufrag}`);
  if (t.pwd) lines.push(`a=ice-pwd:${t.pwd}`);
  for (const f of t.fingerprints) {
    lines.push(`a=fingerprint:${f.hash} ${f.value}`);
  }
  const setup = t.fingerprints.find((f) => f.setup)?.setup;
  if (setup) lines.push(`a=setup:${setup}`);
  if (withCandidates) for (const c of t.candidates) lines.push(`a=${candidateToSdp(c)}`);
  return lines;
}

function ssrcLines(src) {
  const lines = [];
  for (const g of src.groups) lines.push(`a=ssrc-group:${g.semantics} ${g.ssrcs.join(' ')}`);
  for (const ssrc of src.ssrcs) {
    lines.push(`a=ssrc:${ssrc} cname:${src.owner}`);
    lines.push(`a=ssrc:${ssrc} msid:${src.msid}`);
  }
  return lines;
}

// Remote msid "stream track"; we invent one from the owner when the focus sent none.
function msidOf(src) {
  if (src.msid && /^\S+ \S+$/.test(src.msid)) return src.msid;
  if (src.msid && /^\S+$/.test(src.msid)) return `${src.msid} ${src.key}`;
  return `${src.owner} ${src.name || src.key}`;
}

/**
 * The focus's side of one Jingle session, kept as an ordered list of m-lines so renegotiations only
 * append or disable lines. `toSdp()` is the offer to give to setRemoteDescription.
 */
export class RemoteSession {
  constructor(initiate) {
    if (initiate.action !== 'session-initiate') throw new JingleError(`expected session-initiate, got ${initiate.action}`);
    this.sid = initiate.sid;
    this.initiator = initiate.initiator;
    this.bridgeSession = initiate.bridgeSession;
    this.version = 1;
    this.sessionId = String(Math.floor(Math.random() * 1e15) + 1e15);
    this.templates = new Map(); // media → content (codecs, extensions)
    this.contents = []; // the Jingle contents we answer (audio, video)
    this.ignored = [];
    for (const c of initiate.contents) {
      if (c.description && (c.media === 'audio' || c.media === 'video') && c.transport) {
        if (this.templates.has(c.media)) throw new JingleError(`two ${c.media} contents in session-initiate`);
        this.templates.set(c.media, c);
        this.contents.push(c);
      } else {
        this.ignored.push(c.name); // e.g. the SCTP "data" content: our bridge has no data channel
      }
    }
    if (this.contents.length === 0) throw new JingleError('session-initiate has no audio or video content');
    const bundle = initiate.groups.find((g) => g.semantics === 'BUNDLE');
    this.transport = structuredClone(this.contents[0].transport);
    if (!this.transport.ufrag || !this.transport.pwd || this.transport.fingerprints.length === 0) {
      throw new JingleError('session-initiate transport lacks ufrag, pwd or fingerprint');
    }
    if (bundle === undefined && this.contents.length > 1) {
      // Without BUNDLE each content would need its own transport; a Jitsi focus always bundles.
      throw new JingleError('session-initiate without a BUNDLE group');
    }
    this.nextMid = 0;
    // Chrome's first send-side bandwidth estimate (kbps) for video; null leaves Chrome's own (300).
    this.startBitrateKbps = null;
    // false leaves transport-cc (rtcp-fb and header extension) out of the offer, so it is not negotiated.
    this.transportCc = true;
    // Lines: {mid, media, content?, source?, active}
    this.lines = this.contents.map((c) => ({ mid: c.name, media: c.media, content: c, source: null, active: true }));
    this.sources = new Map(); // key → source
    this.addSources(initiate.sources);
  }

  /**
   * A line for a second source of ours (a screen share): the offer says recvonly on it (the focus only
   * receives there), so our answer sends on it. Offers are ours to build, as lib-jitsi-meet adds an m-line
   * to the remote description for a new local source; returns its mid.
   */
  addLocalLine(media) {
    if (!this.templates.has(media)) throw new JingleError(`no ${media} content to send a second source on`);
    this.nextMid += 1;
    const mid = `l${this.nextMid}`;
    this.lines.push({ mid, media, content: null, source: null, local: true, active: true });
    this.version += 1;
    return mid;
  }

  /**
   * The bridge's new ICE credentials after an in-place restart (§5.5), its candidates left out: in the
   * offer they would make Chrome drop the selected pair at once; added after the answer, the new ones are
   * checked while the old pair still carries media (lib-jitsi-meet does the same). DTLS stays.
   */
  restartIce(ufrag, pwd) {
    this.transport = { ...this.transport, ufrag, pwd, candidates: [] };
    this.version += 1;
  }

  /** Disables a line of ours (port 0): its transceiver stops. */
  removeLocalLine(mid) {
    const line = this.lines.find((l) => l.local && l.mid === mid && l.active);
    if (!line) return false;
    line.active = false;
    this.version += 1;
    return true;
  }

  _lineFor(src) {
    return this.lines.find((l) => l.active && l.source && l.source.key === src.key && l.source.owner === src.owner);
  }

  /** Adds remote sources (from session-initiate or source-add); returns the sources actually new. */
  addSources(sources) {
    const added = [];
    for (const raw of sources) {
      if (raw.media !== 'audio' && raw.media !== 'video') continue;
      const src = { ...raw, msid: msidOf(raw) };
      if (src.owner === 'jvb') {
        // The bridge's own feedback SSRCs: signalled on the sendrecv line of that media, never a tile.
        const line = this.lines.find((l) => l.content && l.media === src.media);
        if (line) line.source = src;
        continue;
      }
      if (!this.templates.has(src.media)) throw new JingleError(`source ${src.key} of ${src.owner} has no ${src.media} content`);
      const existing = this._lineFor(src);
      if (existing) {
        // Same source again (e.g. a new RTX SSRC): merge.
        for (const x of src.ssrcs) if (!existing.source.ssrcs.includes(x)) existing.source.ssrcs.push(x);
        existing.source.groups.push(...src.groups.filter((g) => !existing.source.groups.some((h) => sameGroup(g, h))));
        continue;
      }
      for (const x of src.ssrcs) {
        const other = this.ownerOfSsrc(x);
        if (other !== undefined) throw new JingleError(`ssrc ${x} of ${src.owner} is already signalled for ${other}`);
      }
      this.nextMid += 1;
      const mid = `${src.media[0]}${this.nextMid}`;
      this.lines.push({ mid, media: src.media, content: null, source: src, active: true });
      this.sources.set(mid, src);
      added.push(src);
    }
    if (added.length) this.version += 1;
    return added;
  }

  /** Removes remote sources (by SSRC, falling back to name/owner); returns the mids disabled. */
  removeSources(sources) {
    const removed = [];
    for (const src of sources) {
      for (const line of this.lines) {
        if (!line.active || line.content || !line.source) continue;
        const hit = src.ssrcs.some((x) => line.source.ssrcs.includes(x)) ||
          (src.ssrcs.length === 0 && src.name && src.name === line.source.name);
        if (hit) {
          line.active = false;
          removed.push(line.mid);
        }
      }
    }
    if (removed.length) this.version += 1;
    return removed;
  }

  /** Removes every source of one owner (a participant who left). */
  removeOwner(owner) {
    return this.removeSources([...this.sources.values()].filter((s) => s.owner === owner && this._active(s)));
  }

  _active(src) {
    return this.lines.some((l) => l.active && l.source === src);
  }

  addCandidates(candidates) {
    for (const c of candidates) {
      if (!this.transport.candidates.some((d) => candidateToSdp(d) === candidateToSdp(c))) this.transport.candidates.push(c);
    }
  }

  ownerOfMid(mid) {
    const line = this.lines.find((l) => l.mid === mid);
    return line && line.source && !line.content ? line.source.owner : undefined;
  }

  sourceOfMid(mid) {
    const line = this.lines.find((l) => l.mid === mid);
    return line && !line.content ? line.source : undefined;
  }

  ownerOfSsrc(ssrc) {
    const line = this.lines.find((l) => l.active && l.source && l.source.ssrcs.includes(ssrc));
    return line ? line.source.owner : undefined;
  }

  /** Active remote sources: [{mid, owner, media, name, msid, ssrcs}]. */
  activeSources() {
    return this.lines.filter((l) => l.active && l.source && !l.content).map((l) => ({ mid: l.mid, ...l.source }));
  }

  toSdp() {
    const bundle = this.lines.filter((l) => l.active).map((l) => l.mid);
    const lines = [
      'v=0',
      `o=- ${this.sessionId} ${this.version} IN IP4 0.0.0.0`,
      's=-',
      't=0 0',
      `a=group:BUNDLE ${bundle.join(' ')}`,
      'a=msid-semantic: WMS *',
    ];
    if (this.contents.some((c) => c.description.extmapAllowMixed)) lines.push('a=extmap-allow-mixed');
    for (const line of this.lines) {
      const tpl = this.templates.get(line.media);
      const d = tpl.description;
      const port = line.active ? 9 : 0;
      lines.push(`m=${line.media} ${port} UDP/TLS/RTP/SAVPF ${d.payloadTypes.map((p) => p.id).join(' ')}`);
      lines.push('c=IN IP4 0.0.0.0');
      lines.push('a=rtcp:9 IN IP4 0.0.0.0');
      lines.push(...transportLines(this.transport, line.active));
      lines.push(`a=mid:${line.mid}`);
      for (const x of d.extmaps) if (this.transportCc || x.uri !== TRANSPORT_CC_URI) lines.push(`a=extmap:${x.id} ${x.uri}`);
      if (!line.active) lines.push('a=inactive');
      else if (line.content) lines.push(line.content.senders === 'initiator' ? 'a=sendonly' : 'a=sendrecv');
      else if (line.local) lines.push('a=recvonly');
      else lines.push('a=sendonly');
      if (line.active && line.source) lines.push(`a=msid:${line.source.msid}`);
      lines.push('a=rtcp-mux');
      if (d.maxptime) lines.push(`a=maxptime:${d.maxptime}`);
      lines.push(...codecLines(d, this.startBitrateKbps, this.transportCc));
      if (line.active && line.source) lines.push(...ssrcLines(line.source));
    }
    return lines.join('\r\n') + '\r\n';
  }
}

function sameGroup(a, b) {
  return a.semantics === b.semantics && a.ssrcs.length === b.ssrcs.length && a.ssrcs.every((x, i) => x === b.ssrcs[i]);
}

// ---------------------------------------------------------------------------------------------------
// SDP reading

/** Parses an SDP into {session: {attrs}, media: [{media, port, proto, fmts, attrs: [[name, value]]}]}. */
export function parseSdp(sdp) {
  const out = { session: [], media: [] };
  let cur = null;
  for (const raw of sdp.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line) continue;
    if (line.startsWith('m=')) {
      const [media, port, proto, ...fmts] = line.slice(2).split(' ');
      cur = { media, port: Number(port), proto, fmts, attrs: [] };
      out.media.push(cur);
    } else if (line.startsWith('a=')) {
      const body = line.slice(2);
      const i = body.indexOf(':');
      const pair = i < 0 ? [body, ''] : [body.slice(0, i), body.slice(i + 1)];
      (cur ? cur.attrs : out.session).push(pair);
    }
  }
  return out;
}

function all(m, name) {
  return m.attrs.filter(([k]) => k === name).map(([, v]) => v);
}

function one(m, name) {
  return all(m, name)[0];
}

const DIRECTIONS = ['sendrecv', 'sendonly', 'recvonly', 'inactive'];

/** One SDP m-line as a Jingle content model (description + transport). */
export function mediaToContent(m, session = []) {
  const payloadTypes = m.fmts.map((f) => {
    const id = Number(f);
    const rtpmap = all(m, 'rtpmap').find((v) => v.startsWith(`${f} `));
    const [name = '', clockrate, channels] = rtpmap ? rtpmap.slice(f.length + 1).split('/') : [];
    const fmtp = all(m, 'fmtp').find((v) => v.startsWith(`${f} `));
    const parameters = fmtp
      ? fmtp.slice(f.length + 1).split(';').filter(Boolean).map((kv) => {
        const i = kv.indexOf('=');
        return i < 0 ? { name: '', value: kv.trim() } : { name: kv.slice(0, i).trim(), value: kv.slice(i + 1).trim() };
      })
      : [];
    const rtcpFbs = all(m, 'rtcp-fb').filter((v) => v.startsWith(`${f} `)).map((v) => {
      const [type, subtype] = v.slice(f.length + 1).split(' ');
      return { type, subtype };
    });
    return { id, name, clockrate: clockrate ? Number(clockrate) : undefined, channels: channels ? Number(channels) : undefined, parameters, rtcpFbs };
  });
  const ssrcAttrs = new Map();
  for (const v of all(m, 'ssrc')) {
    const sp = v.indexOf(' ');
    const ssrc = Number(v.slice(0, sp));
    const rest = v.slice(sp + 1);
    const c = rest.indexOf(':');
    if (!ssrcAttrs.has(ssrc)) ssrcAttrs.set(ssrc, {});
    ssrcAttrs.get(ssrc)[c < 0 ? rest : rest.slice(0, c)] = c < 0 ? '' : rest.slice(c + 1);
  }
  const mediaMsid = one(m, 'msid');
  const sources = [...ssrcAttrs.entries()].map(([ssrc, a]) => ({ ssrc, msid: a.msid ?? mediaMsid, cname: a.cname }));
  const ssrcGroups = all(m, 'ssrc-group').map((v) => {
    const [semantics, ...ssrcs] = v.split(' ');
    return { semantics, ssrcs: ssrcs.map(Number) };
  });
  const setup = one(m, 'setup') ?? session.find(([k]) => k === 'setup')?.[1];
  const fingerprints = (all(m, 'fingerprint').length ? all(m, 'fingerprint') : session.filter(([k]) => k === 'fingerprint').map(([, v]) => v))
    .map((v) => {
      const [hash, value] = v.split(' ');
      return { hash, setup, value };
    });
  const sessionAttr = (k) => session.find(([n]) => n === k)?.[1];
  return {
    mid: one(m, 'mid'),
    port: m.port,
    direction: DIRECTIONS.find((d) => m.attrs.some(([k]) => k === d)) ?? 'sendrecv',
    description: {
      media: m.media,
      maxptime: one(m, 'maxptime') ? Number(one(m, 'maxptime')) : undefined,
      payloadTypes,
      extmaps: all(m, 'extmap').map((v) => {
        const [idDir, uri] = v.split(' ');
        const [id, senders] = idDir.split('/');
        return { id: Number(id), uri, senders: senders || undefined };
      }),
      extmapAllowMixed: m.attrs.some(([k]) => k === 'extmap-allow-mixed') || session.some(([k]) => k === 'extmap-allow-mixed'),
      rtcpMux: m.attrs.some(([k]) => k === 'rtcp-mux'),
      sources,
      ssrcGroups,
    },
    transport: {
      ufrag: one(m, 'ice-ufrag') ?? sessionAttr('ice-ufrag'),
      pwd: one(m, 'ice-pwd') ?? sessionAttr('ice-pwd'),
      rtcpMux: m.attrs.some(([k]) => k === 'rtcp-mux'),
      fingerprints,
      candidates: all(m, 'candidate').map((v) => candidateFromSdp(v)),
      sctp: null,
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Model → Jingle XML

function payloadTypeXml(pt) {
  return el('payload-type', { id: pt.id, name: pt.name, clockrate: pt.clockrate, channels: pt.channels, ptime: pt.ptime, maxptime: pt.maxptime }, [
    ...pt.parameters.map((p) => el('parameter', { name: p.name, value: p.value })),
    ...pt.rtcpFbs.map((f) => el('rtcp-fb', { xmlns: NS.RTP_FB, type: f.type, subtype: f.subtype })),
  ]);
}

export function candidateXml(c, id) {
  return el('candidate', {
    component: c.component,
    foundation: c.foundation,
    generation: c.generation ?? 0,
    id: c.id ?? id,
    ip: c.ip,
    network: c.network ?? 0,
    port: c.port,
    priority: c.priority,
    protocol: c.protocol,
    type: c.type,
    'rel-addr': c.relAddr,
    'rel-port': c.relPort,
    tcptype: c.tcptype,
  });
}

export function transportXml(t) {
  return el('transport', { xmlns: NS.ICE_UDP, ufrag: t.ufrag, pwd: t.pwd, 'ice-generation': t.iceGeneration ?? undefined }, [
    t.rtcpMux ? el('rtcp-mux') : null,
    ...t.fingerprints.map((f) => el('fingerprint', { xmlns: NS.DTLS, hash: f.hash, setup: f.setup }, [], f.value)),
    ...t.candidates.map((c, i) => candidateXml(c, `c${i}`)),
    t.sctp ? el('sctpmap', { xmlns: NS.SCTP, number: t.sctp.number, protocol: t.sctp.protocol, streams: t.sctp.streams }) : null,
    ...(t.webSockets ?? []).map((url) => el('web-socket', { xmlns: NS.COLIBRI, url })),
  ]);
}

function sourceXml(s) {
  return el('source', { xmlns: NS.SSMA, ssrc: s.ssrc, name: s.name, videoType: s.videoType }, [
    s.msid ? el('parameter', { name: 'msid', value: s.msid }) : null,
    s.owner ? el('ssrc-info', { xmlns: NS.JITMEET, owner: s.owner }) : null,
  ]);
}

function groupXml(g) {
  return el('ssrc-group', { xmlns: NS.SSMA, semantics: g.semantics }, g.ssrcs.map((x) => el('source', { ssrc: x })));
}

export function descriptionXml(d) {
  return el('description', { xmlns: NS.RTP, media: d.media, maxptime: d.maxptime }, [
    ...d.payloadTypes.map(payloadTypeXml),
    ...d.extmaps.map((x) => el('rtp-hdrext', { xmlns: NS.RTP_HDREXT, id: x.id, uri: x.uri, senders: x.senders })),
    d.extmapAllowMixed ? el('extmap-allow-mixed', { xmlns: NS.RTP_HDREXT }) : null,
    d.rtcpMux ? el('rtcp-mux') : null,
    ...d.sources.map(sourceXml),
    ...d.ssrcGroups.map(groupXml),
  ]);
}

export function contentXml(c) {
  return el('content', { creator: c.creator ?? 'initiator', name: c.name, senders: c.senders }, [
    c.description ? descriptionXml(c.description) : null,
    c.transport ? transportXml(c.transport) : null,
  ]);
}

export function jingleXml(j) {
  return el('jingle', { xmlns: NS.JINGLE, action: j.action, initiator: j.initiator, responder: j.responder, sid: j.sid }, [
    ...(j.contents ?? []).map(contentXml),
    ...(j.groups ?? []).map((g) => el('group', { xmlns: NS.GROUPING, semantics: g.semantics }, g.contents.map((n) => el('content', { name: n })))),
    j.reason ? el('reason', {}, [el(j.reason.condition ?? 'success'), j.reason.text ? el('text', {}, [], j.reason.text) : null]) : null,
    j.bridgeSession ? el('bridge-session', {
      xmlns: NS.FOCUS, id: j.bridgeSession.id, region: j.bridgeSession.region,
      restart: j.bridgeSession.restart ? 'true' : undefined, 'ice-restart': j.bridgeSession.iceRestart ? 'true' : undefined,
    }) : null,
    j.jsonSources ? el('json-message', { xmlns: NS.JITMEET }, [], encodeJsonSources(j.jsonSources)) : null,
    j.startMuted ? el('startmuted', { xmlns: NS.START_MUTED, audio: String(j.startMuted.audio), video: String(j.startMuted.video) }) : null,
  ]);
}

// ---------------------------------------------------------------------------------------------------
// Our answer → session-accept

/**
 * The contents of our session-accept, from the local answer SDP.
 * Own sources are named "<nick>-a0" / "<nick>-v0"; RTX SSRCs keep the name and are tied by an FID group.
 * Candidates come from the first (bundled) m-line; every content carries the same transport.
 */
export function answerContents(answerSdp, remote, nick) {
  const sdp = parseSdp(answerSdp);
  const parsed = sdp.media.map((m) => mediaToContent(m, sdp.session));
  const bundled = parsed[0];
  if (!bundled) throw new JingleError('answer has no m-line');
  const transport = {
    ...bundled.transport,
    // Only UDP candidates are signalled: the bridge's ICE-TCP side is passive and learns ours from the
    // connection we open (Chrome's tcptype=active candidates carry port 9).
    candidates: bundled.transport.candidates.filter((c) => c.protocol === 'udp'),
    fingerprints: bundled.transport.fingerprints.map((f) => ({ ...f, setup: f.setup === 'actpass' || !f.setup ? 'active' : f.setup })),
  };
  const contents = [];
  for (const c of remote.contents) {
    const m = parsed.find((p) => p.mid === c.name);
    if (!m) throw new JingleError(`answer has no m-line for content ${c.name}`);
    const d = m.description;
    const name = `${nick}-${c.media === 'audio' ? 'a' : 'v'}0`;
    const sending = m.direction === 'sendrecv' || m.direction === 'sendonly';
    const sources = sending ? d.sources.map((s) => ({ ssrc: s.ssrc, name, msid: s.msid, videoType: c.media === 'video' ? 'camera' : undefined })) : [];
    contents.push({
      name: c.name,
      creator: c.creator ?? 'initiator',
      senders: c.senders ?? 'both',
      description: { ...d, sources, ssrcGroups: sending ? d.ssrcGroups : [] },
      transport: { ...transport, rtcpMux: true },
    });
  }
  return contents;
}

export function sessionAcceptXml(remote, answerSdp, { nick, responder }) {
  const contents = answerContents(answerSdp, remote, nick);
  return toXml(jingleXml({
    action: 'session-accept',
    sid: remote.sid,
    initiator: remote.initiator,
    responder,
    contents,
    groups: [{ semantics: 'BUNDLE', contents: contents.map((c) => c.name) }],
  }));
}

export function transportInfoXml(remote, contentName, candidates, { responder }) {
  const t = { ufrag: candidates.ufrag, pwd: candidates.pwd, fingerprints: [], candidates: candidates.list, rtcpMux: false };
  return toXml(jingleXml({
    action: 'transport-info',
    sid: remote.sid,
    initiator: remote.initiator,
    responder,
    contents: [{ name: contentName, creator: 'initiator', transport: t }],
  }));
}

/**
 * An in-place ICE restart's answer (§5.5): transport-info with our new credentials, fingerprint and the
 * candidates gathered so far, from the local answer, tagged with the bridge's `generation`.
 */
export function iceRestartTransportXml(remote, answerSdp, generation, { nick, responder }) {
  const [first] = answerContents(answerSdp, remote, nick);
  return toXml(jingleXml({
    action: 'transport-info',
    sid: remote.sid,
    initiator: remote.initiator,
    responder,
    contents: [{ name: first.name, creator: 'initiator', transport: { ...first.transport, iceGeneration: generation } }],
  }));
}

/** session-info asking the focus to restart our ICE in place (`<bridge-session ice-restart="true">`). */
export function iceRestartRequestXml(remote) {
  return toXml(jingleXml({
    action: 'session-info',
    sid: remote.sid,
    initiator: remote.initiator,
    bridgeSession: { id: remote.bridgeSession?.id, iceRestart: true },
  }));
}

export function sessionTerminateXml(sid, { initiator, condition = 'success', text, bridgeSessionId, restart = false }) {
  return toXml(jingleXml({
    action: 'session-terminate',
    sid,
    initiator,
    reason: { condition, text },
    bridgeSession: bridgeSessionId ? { id: bridgeSessionId, restart } : null,
  }));
}

/** Sources carried by a source-add / source-remove (inline per content, or JSON), grouped per source. */
export function sourcesOf(parsedJingle) {
  return parsedJingle.sources;
}

// ---------------------------------------------------------------------------------------------------
// Simulcast (legacy SSRC signalling, as Jitsi clients send it to the bridge)
//
// We are the answerer, so rid simulcast would need the focus's offer to ask for it (a=simulcast:recv),
// and our bridge routes by signalled SSRC, not by rid. Instead, as lib-jitsi-meet does, we munge our
// answer before setLocalDescription: the sending video m-line gets N primary SSRCs in one
// `a=ssrc-group:SIM` (lowest layer first), each with its RTX in an `a=ssrc-group:FID`, all under the
// track's one msid. Chrome then encodes one simulcast layer per SIM SSRC; the layers' sizes come from
// RTCRtpSender.setParameters (scaleResolutionDownBy). The session-accept is built from the munged
// local description, so the focus and the bridge see SIM(p1,p2,p3) + FID(p_i, r_i).

// [start, end) of the m-section whose a=mid is `mid`, in SDP lines; null if none.
function sectionBounds(lines, mid) {
  const starts = lines.map((l, i) => (l.startsWith('m=') ? i : -1)).filter((i) => i >= 0);
  for (let k = 0; k < starts.length; k += 1) {
    const end = k + 1 < starts.length ? starts[k + 1] : lines.length;
    if (lines.slice(starts[k], end).includes(`a=mid:${mid}`)) return [starts[k], end];
  }
  return null;
}

function randomSsrc(taken) {
  const b = new Uint32Array(1);
  for (;;) {
    crypto.getRandomValues(b);
    if (b[0] !== 0 && !taken.has(b[0])) {
      taken.add(b[0]);
      return b[0];
    }
  }
}

/**
 * The SSRCs to simulcast the sending m-line `mid` with: Chrome's own primary and RTX as the lowest layer,
 * then fresh random ones. Null when that m-line sends no SSRC (no camera) or has fewer than 1 layer to add.
 * {primaries: [...], rtx: [...] (empty without RTX), cname, msid}
 */
export function simulcastPlan(sdp, mid, layers = 3) {
  const lines = sdp.split(/\r?\n/).filter((l) => l.length);
  const bounds = sectionBounds(lines, mid);
  if (!bounds) return null;
  const m = parseSdp(lines.slice(bounds[0], bounds[1]).join('\r\n')).media[0];
  const c = mediaToContent(m);
  if (!['sendrecv', 'sendonly'].includes(c.direction) || c.description.sources.length === 0) return null;
  const sim = c.description.ssrcGroups.find((g) => g.semantics === 'SIM');
  const fids = c.description.ssrcGroups.filter((g) => g.semantics === 'FID');
  const taken = new Set(parseSdp(sdp).media.flatMap((x) => mediaToContent(x).description.sources.map((s) => s.ssrc)));
  const primaries = sim ? [...sim.ssrcs] : [fids[0]?.ssrcs[0] ?? c.description.sources[0].ssrc];
  const rtxOf = (p) => fids.find((g) => g.ssrcs[0] === p)?.ssrcs[1];
  const hasRtx = rtxOf(primaries[0]) !== undefined;
  while (primaries.length < layers) primaries.push(randomSsrc(taken));
  const rtx = hasRtx ? primaries.map((p) => rtxOf(p) ?? randomSsrc(taken)) : [];
  const first = c.description.sources.find((s) => s.ssrc === primaries[0]) ?? c.description.sources[0];
  const msid = first.msid ?? one(m, 'msid');
  if (!msid) return null;
  return { primaries, rtx, cname: first.cname ?? 'sluice', msid };
}

/** `sdp` with the m-line `mid`'s SSRC lines replaced by the plan's (see simulcastPlan). */
export function withSimulcast(sdp, mid, plan) {
  const lines = sdp.split(/\r?\n/).filter((l) => l.length);
  const bounds = sectionBounds(lines, mid);
  if (!bounds || !plan) return sdp;
  const [start, end] = bounds;
  const section = lines.slice(start, end);
  const firstSsrc = section.findIndex((l) => l.startsWith('a=ssrc-group:') || l.startsWith('a=ssrc:'));
  const kept = section.filter((l) => !l.startsWith('a=ssrc-group:') && !l.startsWith('a=ssrc:'));
  const block = [];
  plan.primaries.forEach((p, i) => {
    if (plan.rtx.length) block.push(`a=ssrc-group:FID ${p} ${plan.rtx[i]}`);
  });
  if (plan.primaries.length > 1) block.push(`a=ssrc-group:SIM ${plan.primaries.join(' ')}`);
  for (const ssrc of [...plan.primaries, ...plan.rtx]) {
    block.push(`a=ssrc:${ssrc} cname:${plan.cname}`);
    block.push(`a=ssrc:${ssrc} msid:${plan.msid}`);
  }
  const at = firstSsrc < 0 ? kept.length : section.slice(0, firstSsrc).filter((l) => !l.startsWith('a=ssrc')).length;
  kept.splice(at, 0, ...block);
  return [...lines.slice(0, start), ...kept, ...lines.slice(end)].join('\r\n') + '\r\n';
}
