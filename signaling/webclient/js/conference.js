// One conference: XMPP login, the conference request to the focus, the MUC room, the Jingle session with
// the bridge (docs/jitsi-protocol.md §5) and the bridge channel (§4, bridge-channel.js). No DOM: the UI
// listens to the events this object dispatches ("state", "participants", "tracks", "locked", "error",
// "ended", "channel", "dominant-speaker", "forwarded-sources") and tells it what its layout needs
// (setReceiverConstraints). What the bridge says receivers want of our camera (SenderSourceConstraints)
// turns its simulcast encodings on and off here. Chat ("chat", "chat-error"), raised hands (in presence),
// a screen share as a second video source, switching devices mid-call and what other pages report of
// their connection ("endpoint-stats", "reaction") use chat.js, hands.js, screenshare.js and quality.js.
// End-to-end encryption (e2ee.js) transforms the frames of the session's senders and receivers.

import { $iq, $msg, $pres, Strophe, XmppClient, xmlElement, StanzaError, AuthFailed } from './xmpp.js';
import {
  NS, JingleError, RemoteSession, parseJingle, sessionAcceptXml, sessionTerminateXml, transportInfoXml,
  candidateFromSdp, candidateToSdp, simulcastPlan, withSimulcast, iceRestartRequestXml, iceRestartTransportXml,
} from './jingle-sdp.js';
import { BridgeChannel } from './bridge-channel.js';
import { audioPayloadTypes, codecOfStats, preferCodec, redOption, sendWith, videoOptions } from './codecs.js';
import { NS_EXTDISCO, forceRelayOption, iceServersFromServices, servicesFromXml } from './ice-servers.js';
import { ChatError, MUC_USER_NS, NICK_NS, parseChatMessage, validateMessage } from './chat.js';
import { LOWER_HAND_MESSAGE, RAISED_HAND, raisedHandOf } from './hands.js';
import { SCREEN_CONSTRAINTS, SCREEN_ENCODING, localSourceOf, screenSourceName, screenSourcesXml } from './screenshare.js';
import { E2EE_PRESENCE, E2ee, e2eeOf, e2eeSupported, passphraseProblem } from './e2ee.js';

/** Reactions a page may send (EndpointMessage "endpoint-reaction"); anything else received is ignored. */
export const REACTIONS = Object.freeze({ like: '👍', clap: '👏', laugh: '😂', surprised: '😮', heart: '❤️' });

const MUC = 'http://jabber.org/protocol/muc';
const MUC_USER = 'http://jabber.org/protocol/muc#user';
const MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
const MUC_ADMIN = 'http://jabber.org/protocol/muc#admin';
const JITMEET = 'http://jitsi.org/jitmeet';
const DATA = 'jabber:x:data';
const AV_MODERATION = 'urn:xmpp:sluice:av-moderation:0';
const KINDS = ['audio', 'video'];
const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const NICK = 'http://jabber.org/protocol/nick';
const AUDIO_NS = 'http://jitsi.org/jitmeet/audio';
const VIDEO_NS = 'http://jitsi.org/jitmeet/video';
const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const JINGLE_ERRORS = 'urn:xmpp:jingle:errors:1';

// disco#info features we answer with (§5.6): the focus picks JSON sources and audio+video, no SCTP.
const FEATURES = [
  DISCO_INFO, 'urn:xmpp:jingle:1', 'urn:xmpp:jingle:apps:rtp:1', 'urn:xmpp:jingle:apps:rtp:audio',
  'urn:xmpp:jingle:apps:rtp:video', 'urn:xmpp:jingle:transports:ice-udp:1', 'urn:xmpp:jingle:apps:dtls:0',
  'urn:ietf:rfc:4588', 'urn:ietf:rfc:5761', 'urn:ietf:rfc:5888', 'http://jitsi.org/tcc', 'http://jitsi.org/remb',
  'http://jitsi.org/source-name', 'http://jitsi.org/receive-multiple-video-streams',
  'http://jitsi.org/json-encoded-sources', 'urn:xmpp:ping',
];

export class PasswordRequired extends Error {
  constructor(wrong) {
    super(wrong ? 'wrong password' : 'this room is protected by a password');
    this.wrong = wrong;
  }
}

/**
 * The focus will not start this room for a guest (a secure domain): someone must log in first. `reason` is
 * the server's text.
 */
export class AuthRequired extends Error {
  constructor(reason) {
    super(reason || 'only authenticated users may start this meeting');
    this.reason = reason || '';
  }
}

/**
 * The room is members-only with a lobby (Jitsi's lobby): knock there (`Conference.knock`) and wait to be let
 * in. `lobbyJid` is the lobby room the server named in its refusal.
 */
export class LobbyRequired extends Error {
  constructor(lobbyJid) {
    super('the lobby is on: ask to join');
    this.lobbyJid = lobbyJid;
  }
}

/** A moderator turned our knock down, nobody answered it in time, or the meeting ended while we waited. */
export class LobbyRefused extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

/** Conference request errors that another try will not change: give up at once and say why. */
const FINAL_CONDITIONS = ['not-allowed', 'forbidden', 'bad-request', 'registration-required'];

/**
 * The claims of a JWT (its middle part), read without verifying it: only to show the token's name before
 * joining. The server verifies the token and shows others the name from it.
 */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

export function randomNick() {
  const b = new Uint8Array(4);
  crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

// Our camera as Jitsi Meet sends it: three VP8 simulcast layers, lowest first (the SIM group's order),
// at 1/4, 1/2 and full size of the capture (320x180, 640x360, 1280x720 from a 720p camera), each with three
// temporal layers (7.5, 15 and 30 fps), so that the bridge can send a receiver on a poor link the smallest
// layer at a quarter of its frame rate, and a grid tile less than the stage.
export const SIMULCAST_LAYERS = Object.freeze([
  { scaleResolutionDownBy: 4, maxBitrate: 200000, scalabilityMode: 'L1T3' },
  { scaleResolutionDownBy: 2, maxBitrate: 500000, scalabilityMode: 'L1T3' },
  { scaleResolutionDownBy: 1, maxBitrate: 1500000, scalabilityMode: 'L1T3' },
]);

// Where Chrome's bandwidth estimate starts, so that every layer goes out from the start (the sum of their
// maxBitrate); loss in the bridge's receiver reports still brings it down.
export const START_BITRATE_KBPS = SIMULCAST_LAYERS.reduce((sum, l) => sum + l.maxBitrate, 0) / 1000;

// Transport-wide congestion control, as Jitsi Meet negotiates it: the bridge answers with transport-cc
// feedback every 100 ms, which Chrome's send-side estimator needs (without it, Chrome counts every packet
// in flight and throttles the encoder to its minimum), and estimates what we can receive from ours.
export const NEGOTIATE_TRANSPORT_CC = true;

/**
 * Which of our camera's encodings stay on when the bridge says `maxHeight` is the most any receiver wants of
 * it (SenderSourceConstraints; docs/jitsi-protocol.md §4): those whose height (the track's smaller side,
 * `trackHeight`, over the encoding's scaleResolutionDownBy) is at most maxHeight, and always the smallest
 * one while maxHeight > 0 (a receiver asking for less than our smallest layer still wants video); none at 0.
 * All of them with no limit (-1, or null: the bridge has said nothing) or when the track's size is unknown.
 */
export function encodingsWanted(maxHeight, trackHeight, scales) {
  if (maxHeight === 0) return scales.map(() => false);
  if (maxHeight === null || maxHeight < 0 || !(trackHeight > 0)) return scales.map(() => true);
  const heights = scales.map((s) => Math.floor(trackHeight / (s >= 1 ? s : 1)));
  const smallest = heights.indexOf(Math.min(...heights));
  return heights.map((h, i) => i === smallest || h <= maxHeight);
}

/** The smaller side of a video track (what SenderSourceConstraints' maxHeight measures), 0 if unknown. */
function smallerSide(track) {
  const { width, height } = track.getSettings();
  return width > 0 && height > 0 ? Math.min(width, height) : 0;
}

const JINGLE_LOG = 32;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// TURN credentials are asked for again when they expire within this long (a new session needs fresh ones).
const ICE_SERVERS_MARGIN_MS = 60000;
// ICE this long 'disconnected' (consent lost: our address changed, or the path went away) and the session is
// restarted, as Jitsi Meet does on ICE failure: session-terminate asking for a restart, the focus re-invites,
// a new PeerConnection gathers where we are now. Chromium says 'failed' only after 30 s without consent.
const ICE_DISCONNECTED_RESTART_MS = 2000;
// Where the server offers in-place ICE restarts (config.json `enableIceRestart`), those come first, after
// this long 'disconnected' (or at once on 'failed'): the bridge keeps the old path while the new generation
// is checked, so a restart that was not needed costs nothing. One that has not reconnected ICE this long after
// it was asked for gives way to a new session; and a second one follows no sooner than this (the focus
// allows one per 5 s).
const ICE_DISCONNECTED_ICE_RESTART_MS = 1000;
const ICE_RESTART_GIVE_UP_MS = 6000;
const ICE_RESTART_MIN_INTERVAL_MS = 10000;
// Chrome says 'disconnected' only about 5 s after its address went away (its checks must time out). Sooner:
// while we send media the bridge answers with transport-cc feedback every 100 ms or so, so nothing at all
// received for this long while our bytes go out means the path is gone; checked this often.
const MEDIA_SILENCE_MS = 1500;
const MEDIA_WATCH_MS = 250;

// Longest <SourceInfo> we read (the focus reads at most 2,048 characters too).
const SOURCE_INFO_MAX = 2048;

/**
 * Mute flags from a presence's <SourceInfo> JSON ({"<nick>-a0": {"muted": true}, "<nick>-v0": {...}}), for
 * the sender's own sources only; a kind is muted when every source of it named there is, undefined when
 * none is named.
 */
export function sourceInfo(st, nick) {
  const out = { audio: undefined, video: undefined };
  const text = [...st.children].find((c) => c.localName === 'SourceInfo')?.textContent;
  if (!text || text.length > SOURCE_INFO_MAX) return out;
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    return out;
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return out;
  const muted = { a: [], v: [] };
  for (const [name, v] of Object.entries(doc)) {
    const m = /^(.+)-([av])\d+$/.exec(name);
    if (m && m[1] === nick && v && typeof v.muted === 'boolean') muted[m[2]].push(v.muted);
  }
  if (muted.a.length) out.audio = muted.a.every(Boolean);
  if (muted.v.length) out.video = muted.v.every(Boolean);
  return out;
}

// Jitsi's token flow: the room URL's ?jwt= rides on the XMPP WebSocket URL as ?token=, next to ?room= (so a
// token for another room is refused at login, with its reason).
function websocketUrl(path, token = null, room = null) {
  const u = new URL(path, location.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (room) u.searchParams.set('room', room);
  if (token) u.searchParams.set('token', token);
  return u.href;
}

export class Conference extends EventTarget {
  constructor({ config, room, displayName, localStream, audioMuted = false, videoMuted = false, token = null }) {
    super();
    this.config = config;
    this.token = token; // the room URL's ?jwt=
    this.credentials = null; // {username, password} after the login prompt (secure domain)
    this.room = room;
    this.roomJid = `${room}@${config.hosts.muc}`;
    this.nick = randomNick();
    this.displayName = displayName;
    this.localStream = localStream;
    this.audioMuted = audioMuted || !localStream?.getAudioTracks().length;
    this.videoMuted = videoMuted || !localStream?.getVideoTracks().length;
    this.applyLocalMute();
    this.password = null;
    this.participants = new Map(); // nick → participant
    this.state = { xmpp: 'disconnected', ice: 'new', joined: false, focus: 'none', jingle: 'none', error: null };
    this.affiliation = 'none';
    this.role = 'none';
    this.locked = false;
    // The lobby: its room while it is on; as a moderator we sit in it and see knocks (nick -> {nick, name, jid}).
    this.lobby = { jid: null, joined: false, knockers: new Map() };
    this.knocking = null; // while we wait in a lobby: {jid, resolve, reject}
    this.mutedByModerator = { audio: false, video: false };
    // A moderated meeting, as the focus tells us (or, as its moderator, as we set it); whether we may unmute.
    this.avModeration = { audio: false, video: false };
    this.avAllowed = { audio: false, video: false };
    this.pc = null;
    this.remote = null;
    this.queue = Promise.resolve();
    this.pendingCandidates = null; // local candidates found after session-accept was sent
    this.restartAt = 0;
    this.iceTimer = null; // ICE_DISCONNECTED_RESTART_MS running since the session's ICE went 'disconnected'
    this.iceRestartEnabled = config?.enableIceRestart === true;
    this.iceRestart = null; // an in-place ICE restart under way: {pc, giveUp (its timer)}
    this.iceRestartAt = 0;
    this.iceGeneration = 0; // of the bridge's transport last applied
    this.mediaWatch = null; // the MEDIA_WATCH_MS timer of the session's silence check
    this.counters = {
      jingleErrors: 0, rejectedStanzas: 0, renegotiations: 0, sessions: 0,
      senderConstraints: 0, // SenderSourceConstraints for our camera, taken
      otherSenderConstraints: 0, // ... naming a source that is not ours, ignored
      encodingUpdates: 0, // setParameters calls that changed which encodings are on
      iceServerRequests: 0, // XEP-0215 queries answered
      iceServerErrors: 0, // ... answered with an error or not at all (the session goes on without them)
      iceServicesIgnored: 0, // services in an answer we could not use
      moderationRefused: 0, // moderator actions the server refused us
      chatSent: 0, chatReceived: 0,
      chatRejected: 0, // messages refused on arrival (too long)
      chatErrors: 0, // messages the server bounced
      screenShares: 0, trackSwitches: 0,
      reactionsIgnored: 0, // endpoint messages that were not a reaction we know
      handsLowered: 0, // our hand lowered by a moderator
      lowerHandRefused: 0, // ... asked by someone who is not a moderator, ignored
      restartsAsked: 0, // sessions we ended asking the focus for a new one (ICE failed or disconnected)
      iceRestartsAsked: 0, // in-place ICE restarts asked for (session-info)
      iceRestartsRefused: 0, // ... that the focus refused (a new session followed)
      iceRestartsApplied: 0, // the bridge's new transports applied
      iceRestartsIgnored: 0, // ... stale (an older generation) or without credentials
      mediaSilences: 0, // times nothing arrived for MEDIA_SILENCE_MS while we sent (ICE was recovered)
      e2eeRotations: 0, // key generations our senders moved to (one per participant who left)
    };
    this.e2ee = null; // E2ee (null when the browser cannot transform encoded frames)
    this.raisedHand = null; // when we raised our hand (ms), null when down
    this.screen = null; // our screen share: {track, mid (its m-line in this session), source (its SSRCs)}
    this.xmpp = null;
    this.left = false;
    this.simulcast = null; // this session's SIM/FID SSRCs (jingle-sdp.js simulcastPlan)
    // The camera's codec and SVC mode, from ?codec=&svc= or config.videoQuality (codecs.js); none: VP8 simulcast.
    this.video = videoOptions(config, globalThis.location?.search ?? '');
    for (const p of this.video.problems) console.warn('video options:', p);
    // RFC 2198 redundant Opus when the focus offers it, from ?red=1 or config.audioQuality.enableOpusRed.
    this.red = redOption(config, globalThis.location?.search ?? '');
    // End-to-end encryption only where the server offers it (config.json's e2ee.enabled): its frame
    // transforms must be on every sender from the session's start, and cost every call about a quarter
    // more browser CPU (three pages: 1.29 cores against 1.01) whether anyone encrypts or not.
    this.e2eeAllowed = config?.e2ee?.enabled === true;
    // STUN/TURN from the server (XEP-0215), asked for after login and again before a session when the TURN
    // credentials are about to expire; ?forceRelay=1 uses relayed candidates only.
    this.iceServers = [];
    this.iceServersExpire = null;
    this.forceRelay = forceRelayOption(globalThis.location?.search ?? '');
    this.channel = null; // the bridge channel of the current session
    this.receiverConstraints = null; // what the layout asked for last (setReceiverConstraints)
    // The last SenderSourceConstraints maxHeight for our camera (null: none yet). Kept across renegotiations
    // and sessions, and applied after each: until the bridge says otherwise it is what receivers want.
    this.senderMaxHeight = null;
    this.encodings = Promise.resolve(); // the chain of setParameters calls on our camera's sender
    this.dominantSpeaker = null;
    this.forwardedSources = null;
    this.jingleLog = []; // the last JINGLE_LOG Jingle stanzas in and out: {dir, action, xml} (for tests)
  }

  _logJingle(dir, action, xml) {
    this.jingleLog.push({ dir, action, xml });
    if (this.jingleLog.length > JINGLE_LOG) this.jingleLog.shift();
  }

  // -------------------------------------------------------------------------------------------- events

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _set(patch) {
    Object.assign(this.state, patch);
    this._emit('state', { ...this.state });
  }

  _participantsChanged() {
    this._emit('participants', this.participantList());
  }

  /**
   * Everyone in the call, us first; a screen share is an entry of its own (id: its source name, screen:
   * true, owner), after the participants.
   */
  participantList() {
    const local = {
      id: this.nick, name: this.displayName, local: true, audioMuted: this.audioMuted, videoMuted: this.videoMuted,
      mutedByModerator: { ...this.mutedByModerator },
      affiliation: this.affiliation, role: this.role, tracks: this.localStream ? this.localStream.getTracks() : [],
      raisedHand: this.raisedHand, e2ee: Boolean(this.e2ee?.enabled),
    };
    const screens = [];
    const screen = (owner, name, local, track, mid = null) => ({
      id: screenSourceName(owner), name, local, screen: true, owner, audioMuted: false, videoMuted: false, tracks: [track],
      e2ee: local ? Boolean(this.e2ee?.enabled) : Boolean(this.participants.get(owner)?.e2ee), e2eeState: mid ? this._e2eeStateOf([mid]) : null,
    });
    if (this.screen) screens.push(screen(this.nick, 'Your screen', true, this.screen.track));
    const remote = [];
    for (const p of this.participants.values()) {
      if (p.isFocus) continue;
      const tracks = [];
      for (const [mid, t] of p.tracks) {
        if (this.remote?.sourceOfMid(mid)?.videoType === 'desktop') screens.push(screen(p.id, `${p.name}'s screen`, false, t, mid));
        else tracks.push(t);
      }
      remote.push({ ...p, local: false, tracks, e2eeState: this._e2eeStateOf([...p.tracks.keys()]) });
    }
    return [local, ...remote, ...screens];
  }

  // ------------------------------------------------------------------------------------------ joining

  /** Logs in, asks the focus for the room and joins it; rejects with PasswordRequired on <not-authorized/>. */
  async join(password = null) {
    this.password = password;
    if (!this.xmpp) {
      const client = new XmppClient(websocketUrl(this.config.websocket, this.credentials ? null : this.token, this.room));
      this.xmpp = client;
      client.addEventListener('status', (e) => {
        if (this.xmpp !== client) return; // one we replaced (the login prompt's)
        this._set({ xmpp: e.detail.status });
        if (e.detail.status === 'disconnected' && client.wasConnected && !this.left) {
          this._closeSession();
          this._set({ joined: false, error: 'connection to the server lost' });
          this._emit('ended', { reason: 'connection to the server lost' });
        }
      });
      this._set({ xmpp: 'connecting' });
      try {
        if (this.credentials) {
          const { username, password } = this.credentials;
          await client.connect(`${username}@${this.config.hosts.auth}`, password);
        } else {
          await client.connect(this.config.hosts.domain);
        }
      } catch (e) {
        this.xmpp = null;
        this._set({ xmpp: 'failed', error: e.message });
        throw e;
      }
      this._installHandlers();
      await this._askIceServers();
    }
    await this._requestConference();
    await this._joinRoom();
  }

  _installHandlers() {
    const x = this.xmpp;
    x.on((st) => this._onPresence(st), { name: 'presence' });
    x.on((st) => this._onJingle(st), { name: 'iq', type: 'set', ns: NS.JINGLE });
    x.on((st) => this._onMute(st, 'audio'), { name: 'iq', type: 'set', ns: AUDIO_NS });
    x.on((st) => this._onMute(st, 'video'), { name: 'iq', type: 'set', ns: VIDEO_NS });
    x.on((st) => this._onAvModeration(st), { name: 'iq', type: 'set', ns: AV_MODERATION });
    x.on((st) => this._onDisco(st), { name: 'iq', type: 'get', ns: DISCO_INFO });
    x.on((st) => this._reply(st), { name: 'iq', type: 'get', ns: 'urn:xmpp:ping' });
    x.on((st) => this._onMessage(st), { name: 'message' });
  }

  /** XEP-0215: the server's STUN and TURN services become our iceServers; on error we keep none. */
  async _askIceServers() {
    try {
      const res = await this.xmpp.iq($iq({ type: 'get', to: this.config.hosts.domain }).c('services', { xmlns: NS_EXTDISCO }),
        'external services', 5000);
      const { iceServers, expires, ignored } = iceServersFromServices(
        servicesFromXml(res.getElementsByTagNameNS(NS_EXTDISCO, 'services')[0]));
      this.iceServers = iceServers;
      this.iceServersExpire = expires;
      this.counters.iceServerRequests += 1;
      this.counters.iceServicesIgnored += ignored;
    } catch (e) {
      this.counters.iceServerErrors += 1;
      console.info('no STUN/TURN services:', e.message);
    }
  }

  /** What the next RTCPeerConnection gets: iceServers (credentials included) and the transport policy. */
  iceConfig() {
    return { iceServers: this.iceServers, iceTransportPolicy: this.forceRelay ? 'relay' : 'all', expires: this.iceServersExpire };
  }

  async _requestConference() {
    this._set({ focus: 'requesting' });
    for (let attempt = 0; ; attempt += 1) {
      if (this.left) throw new Error('left');
      const req = $iq({ type: 'set', to: this.config.hosts.focus })
        .c('conference', { xmlns: NS.FOCUS, room: this.roomJid, 'machine-uid': this.nick })
        .c('property', { name: 'visitors-version', value: '1' });
      try {
        const res = await this.xmpp.iq(req, 'conference request', 10000);
        const conf = res.getElementsByTagNameNS(NS.FOCUS, 'conference')[0];
        if (conf && conf.getAttribute('ready') === 'true') {
          const focusJid = conf.getAttribute('focusjid');
          if (focusJid) this.focusUserJid = focusJid;
          this._set({ focus: 'ready' });
          return;
        }
        this._set({ focus: 'waiting' });
      } catch (e) {
        this._set({ focus: `unavailable (${e.condition ?? e.message})` });
        const text = e.stanza?.getElementsByTagName?.('text')[0]?.textContent ?? '';
        if (e.condition === 'not-authorized') {
          this._set({ focus: 'login required', error: text || e.message });
          throw new AuthRequired(text);
        }
        if (FINAL_CONDITIONS.includes(e.condition)) {
          this._set({ error: e.message });
          throw e;
        }
        if (attempt >= 30) throw new Error(`the conference focus does not answer: ${e.message}`);
      }
      await sleep(Math.min(500 * 2 ** attempt, 5000));
    }
  }

  _presence(join) {
    const p = $pres({ to: `${this.roomJid}/${this.nick}` });
    if (join) {
      p.c('x', { xmlns: MUC });
      if (this.password) p.c('password').t(this.password).up();
      p.up();
    }
    const sourceInfo = {};
    if (this.localStream?.getAudioTracks().length) sourceInfo[`${this.nick}-a0`] = { muted: this.audioMuted };
    if (this.localStream?.getVideoTracks().length) sourceInfo[`${this.nick}-v0`] = { muted: this.videoMuted, videoType: 'camera' };
    if (this.screen) sourceInfo[screenSourceName(this.nick)] = { muted: false, videoType: 'desktop' };
    p.c('nick', { xmlns: NICK }).t(this.displayName).up()
      .c('audiomuted', { xmlns: AUDIO_NS }).t(String(this.audioMuted)).up()
      .c('videomuted', { xmlns: VIDEO_NS }).t(String(this.videoMuted)).up()
      .c('SourceInfo').t(JSON.stringify(sourceInfo)).up();
    if (this.raisedHand !== null) p.c(RAISED_HAND).t(String(this.raisedHand)).up();
    if (this.e2ee?.enabled) p.c(E2EE_PRESENCE).t('true').up();
    return p;
  }

  _joinRoom() {
    this._set({ joined: false });
    return new Promise((resolve, reject) => {
      this._joinWaiter = { resolve, reject };
      this.xmpp.send(this._presence(true));
    });
  }

  // --------------------------------------------------------------------------------------- presences

  get focusUserJid() {
    return this._focusUserJid ?? this.config.focusUserJid;
  }

  set focusUserJid(v) {
    this._focusUserJid = v;
  }

  _onPresence(st) {
    try {
      this._handlePresence(st);
    } catch (e) {
      this.counters.rejectedStanzas += 1;
      console.warn('bad presence ignored:', e, st);
    }
    return true;
  }

  _handlePresence(st) {
    const from = st.getAttribute('from') || '';
    const bare = Strophe.getBareJidFromJid(from);
    if (bare && (bare === this.lobby.jid || bare === this.knocking?.jid)) {
      this._lobbyPresence(st, Strophe.getResourceFromJid(from));
      return;
    }
    if (bare !== this.roomJid) return;
    const nick = Strophe.getResourceFromJid(from);
    const type = st.getAttribute('type');
    const xuser = st.getElementsByTagNameNS(MUC_USER, 'x')[0];
    const codes = xuser ? [...xuser.getElementsByTagNameNS(MUC_USER, 'status')].map((s) => s.getAttribute('code')) : [];
    const self = nick === this.nick;

    if (type === 'error') {
      if (!self || !this._joinWaiter) return;
      const err = st.getElementsByTagName('error')[0];
      const condition = err && err.firstElementChild ? err.firstElementChild.localName : 'unknown';
      const waiter = this._joinWaiter;
      this._joinWaiter = null;
      const lobbyJid = st.getElementsByTagNameNS(JITMEET, 'lobbyroom')[0]?.textContent;
      if (condition === 'not-authorized') waiter.reject(new PasswordRequired(Boolean(this.password)));
      else if (condition === 'registration-required' && lobbyJid) waiter.reject(new LobbyRequired(lobbyJid));
      else if (condition === 'conflict') {
        this.nick = randomNick();
        this._joinRoom().then(waiter.resolve, waiter.reject);
      } else {
        const text = err?.getElementsByTagName('text')[0]?.textContent;
        waiter.reject(new Error(`cannot join the room: ${condition}${text ? ` (${text})` : ''}`));
      }
      return;
    }

    const item = xuser ? xuser.getElementsByTagNameNS(MUC_USER, 'item')[0] : null;
    if (type === 'unavailable') {
      if (self) {
        if (!this.left) {
          const destroyed = xuser?.getElementsByTagNameNS(MUC_USER, 'destroy')[0];
          const why = item?.getElementsByTagNameNS(MUC_USER, 'reason')[0]?.textContent;
          const reason = codes.includes('307') ? `A moderator removed you from the meeting.${why ? ` (${why})` : ''}`
            : destroyed ? 'A moderator ended the meeting for everyone.' : 'The room was closed.';
          this._closeSession();
          this._leaveLobby();
          this._set({ joined: false, error: codes.includes('307') ? 'removed from the room' : destroyed ? 'meeting ended' : 'left the room' });
          this._emit('ended', { reason });
        }
        return;
      }
      const p = this.participants.get(nick);
      this.participants.delete(nick);
      if (p && p.isFocus) {
        // FOCUS_LEFT: the media session ends with the focus (§5.7 step 4); a new focus re-invites.
        this._closeSession();
      } else if (this.remote) {
        this.queue = this.queue.then(() => this._removeOwner(nick));
      }
      if (p && !p.isFocus && this.e2ee?.enabled) {
        this.e2ee.rotate();
        this.counters.e2eeRotations += 1;
      }
      this._participantsChanged();
      return;
    }

    const text = (ns, name) => st.getElementsByTagNameNS(ns, name)[0]?.textContent;
    if (self) {
      const wasModerator = this.isModerator;
      if (item) this.affiliation = item.getAttribute('affiliation') || 'none';
      if (item) this.role = item.getAttribute('role') || 'participant';
      if (this.state.joined && this.isModerator && !wasModerator) this._refreshLocked();
      // With a token the server shows everyone the token's name: show ours the same.
      const shown = text(NICK, 'nick');
      if (shown) this.displayName = shown;
      if (!this.state.joined && this._joinWaiter) {
        const waiter = this._joinWaiter;
        this._joinWaiter = null;
        this._set({ joined: true, error: null });
        this._refreshLocked(true);
        waiter.resolve();
      }
      this._participantsChanged();
      return;
    }
    const realJid = item ? item.getAttribute('jid') : null;
    const isFocus = Boolean(realJid && realJid.startsWith(`${this.focusUserJid}/`));
    const prev = this.participants.get(nick);
    const p = prev ?? { id: nick, tracks: new Map() };
    const info = sourceInfo(st, nick);
    Object.assign(p, {
      name: text(NICK, 'nick') || p.name || nick,
      // Current Jitsi clients say mute only in <SourceInfo>; older ones in <audiomuted>/<videomuted>.
      audioMuted: info.audio ?? text(AUDIO_NS, 'audiomuted') === 'true',
      videoMuted: info.video ?? text(VIDEO_NS, 'videomuted') === 'true',
      jid: realJid,
      isFocus,
      role: item ? item.getAttribute('role') : undefined,
      affiliation: item ? item.getAttribute('affiliation') : undefined,
      raisedHand: raisedHandOf(st),
      e2ee: e2eeOf(st),
    });
    this.participants.set(nick, p);
    if (isFocus) this._set({ focus: 'in room' });
    this._participantsChanged();
  }

  _onMessage(st) {
    // Room configuration changed (status 104): the password may have been set or cleared.
    const from = st.getAttribute('from') || '';
    const invite = st.getElementsByTagNameNS(MUC_USER, 'invite')[0];
    if (invite && from === this.roomJid && this.knocking) {
      // A moderator let us in (the room's invitation, with its password if it has one).
      const password = st.getElementsByTagNameNS(MUC_USER, 'password')[0]?.textContent;
      const knock = this.knocking;
      this.knocking = null;
      this.xmpp.send($pres({ to: `${knock.jid}/${this.nick}`, type: 'unavailable' }));
      knock.resolve(password ?? null);
      return true;
    }
    if (Strophe.getBareJidFromJid(from) === this.roomJid) {
      const codes = [...st.getElementsByTagNameNS(MUC_USER, 'status')].map((s) => s.getAttribute('code'));
      if (codes.includes('104')) this._refreshLocked();
      this._onChat(st);
    }
    return true;
  }

  _onChat(st) {
    if (st.getAttribute('type') === 'error') {
      // A message of ours the server bounced (too big, not in the room, no such occupant).
      this.counters.chatErrors += 1;
      const err = st.getElementsByTagName('error')[0];
      const text = err?.getElementsByTagName('text')[0]?.textContent;
      const condition = err?.firstElementChild?.localName ?? 'error';
      this._emit('chat-error', `Your message was not delivered: ${text || condition}.`);
      return;
    }
    let msg;
    try {
      msg = parseChatMessage(st, this.roomJid);
    } catch (e) {
      if (!(e instanceof ChatError)) throw e;
      this.counters.chatRejected += 1;
      console.warn('chat message refused:', e.message);
      return;
    }
    if (!msg) return;
    this.counters.chatReceived += 1;
    const p = this.participants.get(msg.from);
    const mine = msg.from === this.nick && !msg.private; // the room echoes our groupchat back
    this._emit('chat', { ...msg, name: mine ? this.displayName : msg.name || p?.name || msg.from, mine });
  }

  /**
   * Sends `text` to the room, or privately to the occupant `to` (a nick). Throws ChatError (the message for
   * people) when it is empty or too long. A private message shows at once (the room echoes only groupchat).
   */
  sendChat(text, to = null) {
    const body = validateMessage(text);
    if (!this.state.joined) throw new ChatError('Not in the meeting yet.');
    if (to !== null && !this.participants.has(to)) throw new ChatError('That participant has left.');
    const m = $msg({ to: to ? `${this.roomJid}/${to}` : this.roomJid, type: to ? 'chat' : 'groupchat' })
      .c('body').t(body).up()
      .c('nick', { xmlns: NICK_NS }).t(this.displayName).up();
    if (to) m.c('x', { xmlns: MUC_USER_NS }).up();
    this.xmpp.send(m);
    this.counters.chatSent += 1;
    if (to) {
      this._emit('chat', { from: this.nick, name: this.displayName, text: body, private: true, to, time: Date.now(), delayed: false, mine: true });
    }
  }

  /** Raises (true) or lowers our hand: a timestamp in our presence, as Jitsi clients do. */
  setRaisedHand(up) {
    this.raisedHand = up ? Date.now() : null;
    if (this.state.joined) this.xmpp.send(this._presence(false));
    this._participantsChanged();
  }

  setDisplayName(name) {
    const n = String(name).trim().slice(0, 48);
    if (!n) return;
    this.displayName = n;
    if (this.state.joined) this.xmpp.send(this._presence(false));
    this._participantsChanged();
  }

  /** A reaction everyone sees for a moment (an EndpointMessage through the bridge, as Jitsi's). */
  sendReaction(reaction) {
    if (!(reaction in REACTIONS)) throw new Error(`unknown reaction ${reaction}`);
    const sent = this.channel?.send({ colibriClass: 'EndpointMessage', to: '', msgPayload: { name: 'endpoint-reaction', reaction, timeStamp: Date.now() } });
    this._emit('reaction', { from: this.nick, reaction });
    return Boolean(sent);
  }

  _onChannelMessage(msg) {
    if (msg.colibriClass === 'EndpointStats') {
      this._emit('endpoint-stats', msg);
    } else if (msg.colibriClass === 'EndpointMessage') {
      const payload = msg.msgPayload;
      const from = typeof msg.from === 'string' ? msg.from : null;
      if (from && payload?.name === LOWER_HAND_MESSAGE) {
        // Only a moderator may lower our hand (the bridge sets "from": it cannot be forged).
        if (this.participants.get(from)?.role !== 'moderator') {
          this.counters.lowerHandRefused += 1;
        } else if (this.raisedHand !== null) {
          this.counters.handsLowered += 1;
          this.setRaisedHand(false);
          this._emit('notice', `${this.participants.get(from).name} lowered your hand.`);
        }
      } else if (from && payload?.name === 'endpoint-reaction' && typeof payload.reaction === 'string' && Object.hasOwn(REACTIONS, payload.reaction)) {
        this._emit('reaction', { from, reaction: payload.reaction });
      } else {
        this.counters.reactionsIgnored += 1;
      }
    }
  }

  /**
   * A moderator lowers `nick`'s hand, or everyone's ('') including ours, as Jitsi Meet does: an
   * EndpointMessage {name: "lower-hand-message"} through the bridge; the receiver checks we are a moderator.
   */
  lowerHand(nick = '') {
    if (this.role !== 'moderator') throw new Error('only a moderator can lower hands');
    if (!nick) this.setRaisedHand(false);
    return Boolean(this.channel?.send({ colibriClass: 'EndpointMessage', to: nick, msgPayload: { name: LOWER_HAND_MESSAGE } }));
  }

  /** Tells the others, through the bridge, how our own connection is (EndpointStats, as Jitsi clients). */
  sendEndpointStats(body) {
    return Boolean(this.channel?.send({ ...body, colibriClass: 'EndpointStats' }));
  }

  // ------------------------------------------------------------------------------- end-to-end encryption

  _e2eeStart() {
    if (this.e2ee || !e2eeSupported() || !this.e2eeAllowed) return this.e2ee;
    this.e2ee = new E2ee(this.roomJid);
    this.e2ee.addEventListener('state', () => this._participantsChanged());
    if (this.pc) this.e2ee.attach(this.pc);
    return this.e2ee;
  }

  /**
   * Encrypts our media end to end with `passphrase` (a salt per room: the room's JID), or stops with ''.
   * Others see it in our presence.
   */
  setE2ee(passphrase) {
    const problem = passphrase ? passphraseProblem(passphrase) : '';
    if (problem) throw new Error(problem);
    if (!this.e2eeAllowed) throw new Error('End-to-end encryption is not enabled on this server.');
    if (!e2eeSupported()) throw new Error('This browser cannot encrypt media end to end.');
    this._e2eeStart().setPassphrase(passphrase);
    if (this.state.joined) this.xmpp.send(this._presence(false));
    this._participantsChanged();
  }

  /** What our receivers of these m-lines saw last: 'no-key' or 'wrong-key' over 'decrypted' over 'clear'. */
  _e2eeStateOf(mids) {
    const states = new Set(mids.map((m) => this.e2ee?.states.get(m)).filter(Boolean));
    for (const s of ['no-key', 'wrong-key', 'decrypted', 'clear']) if (states.has(s)) return s;
    return null;
  }

  // ----------------------------------------------------------------------------------- screen sharing

  /** Shares the screen (getDisplayMedia, or `stream` when given): a second video source, "<nick>-v1". */
  async startScreenShare(stream = null) {
    if (this.screen) return;
    const media = stream ?? await navigator.mediaDevices.getDisplayMedia(SCREEN_CONSTRAINTS);
    const track = media.getVideoTracks()[0];
    if (!track) throw new Error('the screen capture has no video');
    track.contentHint = 'detail';
    // The browser's own "Stop sharing" control ends the track.
    track.addEventListener('ended', () => { if (this.screen?.track === track) this.stopScreenShare(); });
    this.screen = { track, mid: null, source: null, maxHeight: null }; // maxHeight: SenderSourceConstraints
    this.counters.screenShares += 1;
    if (this.state.joined) this.xmpp.send(this._presence(false));
    this._participantsChanged();
    const done = this.queue.then(() => this._shareOnSession());
    this.queue = done.catch((e) => console.error('screen share:', e));
    await done;
  }

  /** Puts the screen on a new m-line of the current session and announces it (source-add). */
  async _shareOnSession() {
    const s = this.screen;
    const pc = this.pc;
    if (!s || !pc || !this.remote || this.state.jingle !== 'active' || s.mid) return;
    const remote = this.remote;
    s.mid = remote.addLocalLine('video');
    this.counters.renegotiations += 1;
    await pc.setRemoteDescription({ type: 'offer', sdp: remote.toSdp() });
    const tr = pc.getTransceivers().find((t) => t.mid === s.mid);
    if (!tr) throw new Error(`no transceiver for ${s.mid}`);
    this.e2ee?.attach(pc); // before the sender has its track (see _sessionInitiate)
    tr.direction = 'sendonly';
    await tr.sender.replaceTrack(s.track);
    tr.sender.setStreams(new MediaStream([s.track]));
    await this._answer(pc);
    const params = tr.sender.getParameters();
    if (params.encodings?.length) {
      Object.assign(params.encodings[0], SCREEN_ENCODING, { active: s.maxHeight !== 0 });
      await tr.sender.setParameters(params);
    }
    s.source = localSourceOf(pc.localDescription.sdp, s.mid);
    if (!s.source) throw new Error('the answer sends nothing on the screen line');
    await this._sendJingle(screenSourcesXml(remote, 'source-add', { nick: this.nick, source: s.source, responder: this.xmpp.jid }), 'source-add');
    this.channel?.send({ colibriClass: 'SourceVideoTypeMessage', sourceName: screenSourceName(this.nick), videoType: 'desktop' });
    this._participantsChanged();
  }

  async _screenActive(on) {
    const s = this.screen;
    const sender = this.pc?.getTransceivers().find((t) => t.mid === s?.mid)?.sender;
    if (!sender) return;
    const params = sender.getParameters();
    if (!params.encodings?.length || params.encodings[0].active === on) return;
    params.encodings[0].active = on;
    await sender.setParameters(params);
  }

  async stopScreenShare() {
    const s = this.screen;
    if (!s) return;
    this.screen = null;
    s.track.stop();
    if (this.state.joined) this.xmpp.send(this._presence(false));
    this._participantsChanged();
    const remote = this.remote;
    const done = this.queue.then(async () => {
      if (!s.mid || !remote || remote !== this.remote || !this.pc) return;
      if (s.source) {
        await this._sendJingle(screenSourcesXml(remote, 'source-remove', { nick: this.nick, source: s.source, responder: this.xmpp.jid }), 'source-remove');
      }
      remote.removeLocalLine(s.mid);
      await this._renegotiate();
    });
    this.queue = done.catch((e) => console.error('stop screen share:', e));
    await done;
  }

  // ------------------------------------------------------------------------------------------ devices

  /**
   * Sends `track` instead of our current `kind` track (another camera or microphone), without a new
   * session: the sender's replaceTrack; the old track stops.
   */
  async replaceLocalTrack(kind, track) {
    this.localStream ??= new MediaStream();
    const old = this.localStream.getTracks().find((t) => t.kind === kind) ?? null;
    if (old) this.localStream.removeTrack(old);
    this.localStream.addTrack(track);
    track.enabled = !(kind === 'audio' ? this.audioMuted : this.videoMuted);
    const mid = this.remote?.contents.find((c) => c.media === kind)?.name;
    const sender = this.pc?.getTransceivers().find((t) => t.mid === mid)?.sender;
    if (sender) await sender.replaceTrack(track);
    if (old && old !== track) old.stop();
    this.counters.trackSwitches += 1;
    if (kind === 'video' && sender) await this._setEncodings(false); // its size may differ
    this._participantsChanged();
  }

  async _refreshLocked(initial = false) {
    try {
      const res = await this.xmpp.iq($iq({ type: 'get', to: this.roomJid }).c('query', { xmlns: DISCO_INFO }), 'room info');
      const features = [...res.getElementsByTagNameNS(DISCO_INFO, 'feature')].map((f) => f.getAttribute('var'));
      this._setLocked(features.includes('muc_passwordprotected'), initial);
      const lobbyField = [...res.getElementsByTagNameNS(DATA, 'field')].find((f) => f.getAttribute('var') === 'muc#roominfo_lobbyroom');
      this._setLobby(lobbyField?.getElementsByTagNameNS(DATA, 'value')[0]?.textContent || null);
    } catch (e) {
      console.warn('room disco#info failed:', e.message);
    }
  }

  // -------------------------------------------------------------------------------------------- lobby

  get isModerator() {
    return this.role === 'moderator' || this.affiliation === 'owner' || this.affiliation === 'admin';
  }

  /** The room's lobby is `jid` (null: off). A moderator joins it to see who knocks. */
  _setLobby(jid) {
    if (jid === this.lobby.jid && (this.lobby.joined || !jid || !this.isModerator)) return;
    if (jid !== this.lobby.jid) this._leaveLobby();
    this.lobby.jid = jid;
    if (jid && this.isModerator && !this.lobby.joined) {
      this.lobby.joined = true;
      this.xmpp.send($pres({ to: `${jid}/${this.nick}` }).c('x', { xmlns: MUC }).up().c('nick', { xmlns: NICK }).t(this.displayName));
    }
    this._emit('lobby', this.lobbyState());
  }

  _leaveLobby() {
    if (this.lobby.joined && this.lobby.jid && this.xmpp) this.xmpp.send($pres({ to: `${this.lobby.jid}/${this.nick}`, type: 'unavailable' }));
    this.lobby.joined = false;
    this.lobby.knockers.clear();
  }

  lobbyState() {
    return {
      on: Boolean(this.lobby.jid), jid: this.lobby.jid, waiting: Boolean(this.knocking),
      knockers: [...this.lobby.knockers.values()].map(({ nick, name }) => ({ nick, name })),
    };
  }

  _lobbyPresence(st, nick) {
    const type = st.getAttribute('type');
    const xuser = st.getElementsByTagNameNS(MUC_USER, 'x')[0];
    const codes = xuser ? [...xuser.getElementsByTagNameNS(MUC_USER, 'status')].map((s) => s.getAttribute('code')) : [];
    const item = xuser?.getElementsByTagNameNS(MUC_USER, 'item')[0];
    const self = nick === this.nick;
    if (this.knocking && self) {
      const knock = this.knocking;
      if (type === 'error') {
        const err = st.getElementsByTagName('error')[0];
        this.knocking = null;
        knock.reject(new LobbyRefused(err?.getElementsByTagName('text')[0]?.textContent || 'The lobby refused us.'));
      } else if (type === 'unavailable') {
        this.knocking = null;
        const destroy = xuser?.getElementsByTagNameNS(MUC_USER, 'destroy')[0];
        const why = item?.getElementsByTagNameNS(MUC_USER, 'reason')[0]?.textContent;
        if (destroy?.getAttribute('jid') === this.roomJid) knock.resolve(null); // the lobby was turned off: go in
        else if (destroy) knock.reject(new LobbyRefused('The meeting ended while you waited.'));
        else if (codes.includes('307')) knock.reject(new LobbyRefused(why ? `You were not let in: ${why}` : 'A moderator did not let you in.'));
        else knock.reject(new LobbyRefused('You left the lobby.'));
      }
      return;
    }
    if (self) {
      if (type === 'unavailable') this.lobby.joined = false;
      return;
    }
    if (type === 'unavailable') this.lobby.knockers.delete(nick);
    else if (item?.getAttribute('role') !== 'moderator') {
      const name = st.getElementsByTagNameNS(NICK, 'nick')[0]?.textContent || nick;
      this.lobby.knockers.set(nick, { nick, name: name.slice(0, 48), jid: item?.getAttribute('jid') || null });
    }
    this._emit('lobby', this.lobbyState());
  }

  /**
   * Waits in the room's lobby (`err` is the LobbyRequired of our join) under our display name until a
   * moderator lets us in, then joins the room; rejects with LobbyRefused when turned down.
   */
  async knock(err) {
    const password = await new Promise((resolve, reject) => {
      this.knocking = { jid: err.lobbyJid, resolve, reject };
      this._emit('lobby', this.lobbyState());
      this.xmpp.send($pres({ to: `${err.lobbyJid}/${this.nick}` }).c('x', { xmlns: MUC }).up()
        .c('nick', { xmlns: NICK }).t(this.displayName));
    });
    this._emit('lobby', this.lobbyState());
    if (password) this.password = password;
    await this._joinRoom();
  }

  /** Moderators: turns the lobby on or off (the room's members-only setting, as Jitsi's lobby). */
  async setLobby(on) {
    await this._configure({ 'muc#roomconfig_membersonly': on ? '1' : '0' }, 'lobby');
    await this._refreshLocked();
  }

  async admit(nick) {
    const k = this.lobby.knockers.get(nick);
    if (!k?.jid) throw new Error(`nobody called ${nick} is waiting`);
    await this._moderate($iq({ type: 'set', to: this.roomJid }).c('query', { xmlns: MUC_ADMIN })
      .c('item', { affiliation: 'member', jid: Strophe.getBareJidFromJid(k.jid) }), 'admit');
  }

  async reject(nick) {
    await this._moderate($iq({ type: 'set', to: this.lobby.jid }).c('query', { xmlns: MUC_ADMIN })
      .c('item', { nick, role: 'none' }).c('reason').t('A moderator did not let you in.'), 'reject');
  }

  // ------------------------------------------------------------------------------------ moderation

  async _moderate(iq, what) {
    try {
      return await this.xmpp.iq(iq, what);
    } catch (e) {
      this.counters.moderationRefused += 1;
      throw e;
    }
  }

  async _configure(fields, what) {
    const form = $iq({ type: 'set', to: this.roomJid }).c('query', { xmlns: MUC_OWNER })
      .c('x', { xmlns: DATA, type: 'submit' })
      .c('field', { var: 'FORM_TYPE' }).c('value').t('http://jabber.org/protocol/muc#roomconfig').up().up();
    for (const [k, v] of Object.entries(fields)) form.c('field', { var: k }).c('value').t(v).up().up();
    await this._moderate(form, what);
  }

  /** Whether we must wait for a moderator before unmuting `kind` (a moderated meeting). */
  mustAsk(kind) {
    return this.avModeration[kind] && !this.avAllowed[kind] && !this.isModerator;
  }

  _onAvModeration(st) {
    const note = st.getElementsByTagNameNS(AV_MODERATION, 'av-moderation')[0];
    const kind = note?.getAttribute('kind');
    if (!this._fromFocus(st) || !KINDS.includes(kind)) {
      this.counters.rejectedStanzas += 1;
      this._error(st, 'auth', 'not-authorized', null, null, 'moderation notices are accepted from the focus only');
      return true;
    }
    this._reply(st);
    const allowedBefore = this.avAllowed[kind];
    this.avModeration[kind] = note.getAttribute('enabled') === 'true';
    this.avAllowed[kind] = note.getAttribute('allowed') === 'true';
    if (this.avModeration[kind] && this.avAllowed[kind] && !allowedBefore) {
      this._emit('notice', `A moderator allowed you to turn your ${kind === 'audio' ? 'microphone' : 'camera'} on.`);
    }
    this._participantsChanged();
    return true;
  }

  /** Moderators: a moderated meeting (everyone else muted until a moderator allows them), or not. */
  async setAvModeration(on) {
    for (const kind of KINDS) {
      await this._moderate($iq({ type: 'set', to: `${this.roomJid}/focus` })
        .c('av-moderation', { xmlns: AV_MODERATION, kind, enable: String(on) }), 'moderate the meeting');
      this.avModeration[kind] = on;
    }
    this._participantsChanged();
  }

  /** Moderators: lets `id` unmute in a moderated meeting. */
  async allowUnmute(id) {
    for (const kind of KINDS) {
      await this._moderate($iq({ type: 'set', to: `${this.roomJid}/focus` })
        .c('av-moderation', { xmlns: AV_MODERATION, kind, allow: id }), 'allow to unmute');
    }
  }

  /** Mutes `id`'s microphone (`audio`) or camera (`video`) through the focus (Colibri2 force-mute). */
  async muteParticipant(id, kind = 'audio') {
    const ns = kind === 'audio' ? AUDIO_NS : VIDEO_NS;
    await this._moderate($iq({ type: 'set', to: `${this.roomJid}/focus` })
      .c('mute', { xmlns: ns, jid: `${this.roomJid}/${id}` }).t('true'), `mute ${kind}`);
  }

  /** Mutes every other participant's `kind`; resolves with how many requests were refused. */
  async muteEveryone(kind = 'audio') {
    const others = [...this.participants.values()].filter((p) => !p.isFocus);
    const results = await Promise.allSettled(others.map((p) => this.muteParticipant(p.id, kind)));
    return results.filter((r) => r.status === 'rejected').length;
  }

  async kick(id) {
    await this._moderate($iq({ type: 'set', to: this.roomJid }).c('query', { xmlns: MUC_ADMIN })
      .c('item', { nick: id, role: 'none' }).c('reason').t('Removed by a moderator'), 'kick');
  }

  async grantModerator(id) {
    const p = this.participants.get(id);
    if (!p?.jid) throw new Error(`no real JID known for ${id}`);
    await this._moderate($iq({ type: 'set', to: this.roomJid }).c('query', { xmlns: MUC_ADMIN })
      .c('item', { affiliation: 'owner', jid: Strophe.getBareJidFromJid(p.jid) }), 'grant moderator');
  }

  /** Ends the meeting for everyone: the MUC destroys the room; the focus ends every media session. */
  async endMeeting() {
    await this._moderate($iq({ type: 'set', to: this.roomJid }).c('query', { xmlns: MUC_OWNER })
      .c('destroy').c('reason').t('A moderator ended the meeting'), 'end meeting');
  }

  _setLocked(locked, initial = false) {
    if (locked !== this.locked) {
      this.locked = locked;
      this._emit('locked', { locked, initial });
    }
  }

  // ----------------------------------------------------------------------------------------- IQs in

  _reply(st) {
    this.xmpp.send($iq({ type: 'result', to: st.getAttribute('from'), id: st.getAttribute('id') }));
    return true;
  }

  _error(st, type, condition, appNs, appCondition, text) {
    const iq = $iq({ type: 'error', to: st.getAttribute('from'), id: st.getAttribute('id') })
      .c('error', { type }).c(condition, { xmlns: STANZAS }).up();
    if (text) iq.c('text', { xmlns: STANZAS }).t(text).up();
    if (appNs) iq.c(appCondition, { xmlns: appNs }).up();
    this.xmpp.send(iq);
  }

  _onDisco(st) {
    if (st.getAttribute('to') && Strophe.getResourceFromJid(st.getAttribute('to')) === null) return true;
    const q = $iq({ type: 'result', to: st.getAttribute('from'), id: st.getAttribute('id') })
      .c('query', { xmlns: DISCO_INFO }).c('identity', { category: 'client', type: 'web', name: 'Sluice' }).up();
    for (const f of FEATURES) q.c('feature', { var: f }).up();
    this.xmpp.send(q);
    return true;
  }

  _fromFocus(st) {
    const from = st.getAttribute('from') || '';
    if (from !== `${this.roomJid}/focus`) return false;
    const focus = this.participants.get('focus');
    return Boolean(focus && focus.isFocus);
  }

  _onMute(st, kind) {
    const ns = kind === 'audio' ? AUDIO_NS : VIDEO_NS;
    const mute = st.getElementsByTagNameNS(ns, 'mute')[0];
    if (!mute) return true;
    if (!this._fromFocus(st)) {
      this.counters.rejectedStanzas += 1;
      this._error(st, 'auth', 'not-authorized', null, null, 'mute requests are accepted from the focus only');
      return true;
    }
    this._reply(st);
    // Only "mute" is obeyed: nobody else may turn our microphone or camera on.
    if (mute.textContent.trim() === 'true') {
      if (kind === 'audio') this.setAudioMuted(true);
      else this.setVideoMuted(true);
      this.mutedByModerator[kind] = true;
      this._participantsChanged();
      this._emit('notice', `The moderator muted your ${kind === 'audio' ? 'microphone' : 'camera'}.`);
    }
    return true;
  }

  _onJingle(st) {
    const jingleEl = st.getElementsByTagNameNS(NS.JINGLE, 'jingle')[0];
    if (!jingleEl) return true;
    if (!this._fromFocus(st)) {
      this.counters.rejectedStanzas += 1;
      this._error(st, 'auth', 'not-authorized', null, null, 'Jingle is accepted from the conference focus only');
      return true;
    }
    let j;
    try {
      j = parseJingle(jingleEl);
    } catch (e) {
      this.counters.jingleErrors += 1;
      this._error(st, 'modify', 'bad-request', null, null, e.message);
      console.warn('bad jingle:', e.message);
      return true;
    }
    if (j.action !== 'session-initiate' && (!this.remote || this.remote.sid !== j.sid)) {
      this.counters.jingleErrors += 1;
      this._error(st, 'cancel', 'item-not-found', JINGLE_ERRORS, 'unknown-session');
      return true;
    }
    this._reply(st);
    this._logJingle('in', j.action, new XMLSerializer().serializeToString(jingleEl));
    this.queue = this.queue.then(() => this._jingle(j)).catch((e) => {
      this.counters.jingleErrors += 1;
      console.error(`jingle ${j.action} failed:`, e);
      this._set({ error: `${j.action}: ${e.message}` });
    });
    return true;
  }

  async _jingle(j) {
    switch (j.action) {
      case 'session-initiate':
        return this._sessionInitiate(j);
      case 'source-add':
        this.remote.addSources(j.sources);
        return this._renegotiate();
      case 'source-remove':
        this.remote.removeSources(j.sources);
        this._dropTracksOfInactive();
        return this._renegotiate();
      case 'transport-info':
        return this._transportInfo(j);
      case 'session-terminate':
        this._closeSession();
        this._set({ jingle: j.bridgeSession?.restart ? 'restarting' : 'terminated' });
        return undefined;
      default:
        console.info('ignored jingle action', j.action);
        return undefined;
    }
  }

  // ------------------------------------------------------------------------------------ media session

  async _sessionInitiate(j) {
    this._closeSession();
    const remote = new RemoteSession(j);
    const audio = remote.templates.get('audio');
    if (audio) audio.description.payloadTypes = audioPayloadTypes(audio.description.payloadTypes, this.red);
    remote.startBitrateKbps = START_BITRATE_KBPS;
    remote.transportCc = NEGOTIATE_TRANSPORT_CC;
    this.remote = remote;
    this.counters.sessions += 1;
    this._set({ jingle: 'negotiating', ice: 'new' });
    if (this.iceServersExpire !== null && this.iceServersExpire - Date.now() < ICE_SERVERS_MARGIN_MS) await this._askIceServers();
    if (this.remote !== remote) return; // a newer session-initiate came meanwhile
    const { iceServers, iceTransportPolicy } = this.iceConfig();
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', iceServers, iceTransportPolicy });
    this.pc = pc;
    this.simulcast = null;
    this.pendingCandidates = [];
    this._openChannel(remote.transport.webSockets ?? []);
    // Chrome calls a sender's transform only when it was set before the sender had a track (one set later
    // is never called), so every session gets the E2EE transforms from the start, passing frames through
    // until a passphrase is set.
    const e2ee = this._e2eeStart();
    if (this.localStream) for (const t of this.localStream.getTracks()) e2ee?.attachSender(pc.addTrack(t, this.localStream), t.kind);
    pc.ontrack = (e) => this._onTrack(e);
    pc.onicecandidate = (e) => this._onLocalCandidate(pc, e.candidate);
    pc.oniceconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const state = pc.iceConnectionState;
      this._set({ ice: state });
      clearTimeout(this.iceTimer);
      this.iceTimer = null;
      if (state === 'connected' || state === 'completed') this._iceRestartEnded();
      else if (state === 'failed') this._recoverIce('ICE failed');
      else if (state === 'disconnected') {
        this.iceTimer = setTimeout(() => {
          if (pc === this.pc && pc.iceConnectionState === 'disconnected') this._recoverIce('ICE disconnected');
        }, this.iceRestartEnabled ? ICE_DISCONNECTED_ICE_RESTART_MS : ICE_DISCONNECTED_RESTART_MS);
      }
    };
    await pc.setRemoteDescription({ type: 'offer', sdp: remote.toSdp() });
    this._bindLocalTracks(pc);
    await this._answer(pc);
    await this._gathered(pc, 3000);
    if (pc !== this.pc) return;
    const localSdp = pc.localDescription.sdp;
    const xml = sessionAcceptXml(remote, localSdp, { nick: this.nick, responder: this.xmpp.jid });
    // Candidates gathered after this point are not in session-accept: they follow as transport-info.
    const late = this.pendingCandidates.filter((c) => !localSdp.includes(c.candidate.trim()));
    this.pendingCandidates = null;
    await this._sendJingle(xml, 'session-accept');
    if (late.length) this._sendCandidates(late);
    this._set({ jingle: 'active' });
    this._watchMedia(pc);
    if (this.screen) {
      // A new session while sharing: the screen goes on this one too.
      Object.assign(this.screen, { mid: null, source: null });
      this.queue = this.queue.then(() => this._shareOnSession()).catch((e) => console.error('screen share:', e));
    }
    if (j.startMuted) {
      if (j.startMuted.audio) this.setAudioMuted(true);
      if (j.startMuted.video) this.setVideoMuted(true);
    }
  }

  // Our tracks go on the first audio/video m-lines (the focus's "audio" and "video" contents).
  _bindLocalTracks(pc) {
    for (const c of this.remote.contents) {
      const tr = pc.getTransceivers().find((t) => t.mid === c.name);
      const track = this.localStream?.getTracks().find((t) => t.kind === c.media);
      if (!tr || !track) continue;
      if (tr.sender.track !== track) {
        tr.sender.replaceTrack(track);
        tr.sender.setStreams(this.localStream);
      }
      tr.direction = 'sendrecv';
    }
    // addTrack transceivers that did not bind to an m-line would add m-lines to our answer: stop them.
    for (const t of pc.getTransceivers()) if (t.mid === null && !t.stopped) t.stop();
  }

  _gathered(pc, timeoutMs) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === 'complete') {
          pc.removeEventListener('icegatheringstatechange', done);
          resolve();
        }
      };
      pc.addEventListener('icegatheringstatechange', done);
      setTimeout(resolve, timeoutMs);
    });
  }

  _onLocalCandidate(pc, cand) {
    if (pc !== this.pc || !cand || !cand.candidate) return;
    // Before session-accept the candidates travel in it (from the local description).
    if (this.pendingCandidates) this.pendingCandidates.push(cand);
    else this._sendCandidates([cand]);
  }

  _sendCandidates(cands) {
    if (!this.remote || !this.pc) return;
    const local = this.pc.localDescription?.sdp ?? '';
    const list = cands.map((c) => candidateFromSdp(c.candidate)).filter((c) => c.protocol === 'udp');
    if (!list.length) return;
    const ufrag = (local.match(/a=ice-ufrag:(\S+)/) || [])[1];
    const pwd = (local.match(/a=ice-pwd:(\S+)/) || [])[1];
    const xml = transportInfoXml(this.remote, this.remote.contents[0].name, { ufrag, pwd, list }, { responder: this.xmpp.jid });
    this._sendJingle(xml, 'transport-info').catch((e) => console.warn(e.message));
  }

  async _sendJingle(xml, what) {
    this._logJingle('out', what, xml);
    const iq = $iq({ type: 'set', to: `${this.roomJid}/focus` }).cnode(xmlElement(xml));
    await this.xmpp.iq(iq, what);
  }

  async _renegotiate() {
    const pc = this.pc;
    if (!pc || !this.remote) return;
    this.counters.renegotiations += 1;
    await pc.setRemoteDescription({ type: 'offer', sdp: this.remote.toSdp() });
    await this._answer(pc);
    this._participantsChanged();
  }

  /**
   * createAnswer, with our camera's m-line turned into simulcast (the same SSRCs for the whole session), or,
   * with an SVC mode (codecs.js), left at its one SSRC + RTX and sent as one SVC encoding.
   */
  async _answer(pc) {
    this.e2ee?.attach(pc); // before any frame is encoded on a new line
    const video = this.remote.contents.find((c) => c.media === 'video');
    const camera = video && this.localStream?.getVideoTracks().length ? pc.getTransceivers().find((t) => t.mid === video.name) : null;
    if (camera && this.video.codec) preferCodec(camera, this.video.codec);
    const answer = await pc.createAnswer();
    let sdp = answer.sdp;
    if (camera && !this.video.scalabilityMode) {
      this.simulcast ??= simulcastPlan(sdp, video.name, SIMULCAST_LAYERS.length);
      sdp = withSimulcast(sdp, video.name, this.simulcast);
    }
    await pc.setLocalDescription({ type: 'answer', sdp });
    if (camera && (this.video.codec || this.video.scalabilityMode)) {
      // In the chain of setParameters calls, before the encodings' sizes and on/off flags.
      const done = this.encodings.then(() => sendWith(camera.sender, this.video));
      this.encodings = done.catch(() => {});
      await done;
    }
    if (camera) await this._setEncodings(Boolean(this.simulcast));
  }

  /** Our camera's RTCRtpSender in the current session (on the focus's "video" content), if any. */
  _videoSender() {
    const mid = this.remote?.contents.find((c) => c.media === 'video')?.name;
    return this.pc?.getTransceivers().find((t) => t.mid === mid)?.sender ?? null;
  }

  /**
   * Our camera's encodings: with `layers`, the simulcast layers' sizes and bitrates (after each answer:
   * Chrome made one encoding per SIM SSRC); always, which are on for the last SenderSourceConstraints
   * (encodingsWanted), so a renegotiation or a new session (and the replaceTrack before its answer) keeps
   * them. Calls run one after another, each on a fresh getParameters(), since setParameters takes only the
   * parameters of the getParameters() just before it.
   */
  _setEncodings(layers) {
    const run = async () => {
      const sender = this._videoSender();
      if (!sender || !sender.track) return;
      const params = sender.getParameters();
      const encodings = params.encodings ?? [];
      if (!encodings.length) return;
      let changed = false;
      if (layers) {
        if (encodings.length === SIMULCAST_LAYERS.length) {
          encodings.forEach((e, i) => Object.assign(e, SIMULCAST_LAYERS[i]));
          changed = true;
        } else {
          console.warn('simulcast: the browser made', encodings.length, 'encodings, not', SIMULCAST_LAYERS.length);
        }
      }
      const scales = encodings.map((e) => e.scaleResolutionDownBy ?? 1);
      const wanted = encodingsWanted(this.senderMaxHeight, smallerSide(sender.track), scales);
      if (encodings.some((e, i) => e.active !== wanted[i])) {
        encodings.forEach((e, i) => { e.active = wanted[i]; });
        this.counters.encodingUpdates += 1;
        changed = true;
      }
      if (!changed) return;
      try {
        await sender.setParameters(params);
      } catch (e) {
        // A browser without per-encoding scalabilityMode sends the layers without temporal layers.
        if (!layers || !encodings.some((x) => x.scalabilityMode)) throw e;
        console.warn('simulcast: no temporal layers:', e.message);
        const again = sender.getParameters();
        again.encodings.forEach((x, i) => {
          Object.assign(x, SIMULCAST_LAYERS[i] ?? {}, { active: encodings[i]?.active ?? true });
          delete x.scalabilityMode;
        });
        await sender.setParameters(again);
      }
    };
    const done = this.encodings.then(run);
    this.encodings = done.catch(() => {});
    return done;
  }

  /** SenderSourceConstraints from the bridge channel: only our camera ("<nick>-v0") has encodings to switch. */
  _onSenderConstraints({ sourceName, maxHeight }) {
    if (this.screen?.mid && sourceName === screenSourceName(this.nick)) {
      // Our screen share: one encoding, on while anyone wants it.
      this.counters.senderConstraints += 1;
      this.screen.maxHeight = maxHeight;
      this._screenActive(maxHeight !== 0).catch((e) => console.warn('screen constraints:', e.message));
      return;
    }
    if (sourceName !== `${this.nick}-v0` || !this.localStream?.getVideoTracks().length) {
      this.counters.otherSenderConstraints += 1;
      return;
    }
    this.counters.senderConstraints += 1;
    this.senderMaxHeight = maxHeight;
    // A sender closed meanwhile (a new session) fails here; the next answer applies the height.
    this._setEncodings(false).catch((e) => console.warn('sender constraints:', e.message));
  }

  async _transportInfo(j) {
    const restarted = j.contents.find((c) => c.transport?.iceGeneration)?.transport;
    if (restarted) return this._applyIceRestart(restarted);
    const cands = j.contents.flatMap((c) => (c.transport ? c.transport.candidates : []));
    this.remote.addCandidates(cands);
    const mid = this.remote.contents[0].name;
    for (const c of cands) {
      await this.pc.addIceCandidate({ candidate: candidateToSdp(c), sdpMid: mid, sdpMLineIndex: 0 });
    }
  }

  async _removeOwner(nick) {
    if (!this.remote) return;
    if (this.remote.removeOwner(nick).length) {
      this._dropTracksOfInactive();
      await this._renegotiate();
    }
  }

  _dropTracksOfInactive() {
    const active = new Set(this.remote.activeSources().map((s) => s.mid));
    for (const p of this.participants.values()) {
      for (const mid of [...p.tracks.keys()]) if (!active.has(mid)) p.tracks.delete(mid);
    }
    this._participantsChanged();
  }

  _onTrack(e) {
    const mid = e.transceiver.mid;
    if (e.target === this.pc) this.e2ee?.attach(this.pc);
    const src = this.remote?.sourceOfMid(mid);
    if (!src) return; // the bridge's own (jvb) lines or our sendrecv lines
    const p = this.participants.get(src.owner);
    if (!p) {
      // Sources can arrive before the owner's presence: keep a placeholder until it shows up.
      this.participants.set(src.owner, { id: src.owner, name: src.owner, audioMuted: false, videoMuted: false, isFocus: false, tracks: new Map([[mid, e.track]]) });
    } else {
      p.tracks.set(mid, e.track);
    }
    this._emit('tracks', { owner: src.owner, mid, track: e.track });
    this._participantsChanged();
  }

  /** ICE lost its path: an in-place restart where the server offers it, else (or if it fails) a new session. */
  _recoverIce(why) {
    if (!this.remote || !this.pc || this.iceRestart) return; // one under way: its own timer decides
    if (!this.iceRestartEnabled || Date.now() - this.iceRestartAt < ICE_RESTART_MIN_INTERVAL_MS) {
      this._requestRestart(why);
      return;
    }
    const pc = this.pc;
    this.iceRestartAt = Date.now();
    this.counters.iceRestartsAsked += 1;
    const fallBack = (reason) => {
      if (this.iceRestart?.pc !== pc) return;
      clearTimeout(this.iceRestart.giveUp);
      this.iceRestart = null;
      if (this.pc === pc) this._requestRestart(`${why}; ${reason}`);
    };
    this.iceRestart = { pc, giveUp: setTimeout(() => fallBack('the ICE restart did not reconnect'), ICE_RESTART_GIVE_UP_MS) };
    this._sendJingle(iceRestartRequestXml(this.remote), 'session-info').catch((e) => {
      this.counters.iceRestartsRefused += 1;
      fallBack(`ICE restart refused: ${e.message}`);
    });
  }

  /** While `pc` is the session's: ICE recovery when nothing arrives for MEDIA_SILENCE_MS while we send. */
  _watchMedia(pc) {
    clearInterval(this.mediaWatch);
    let last = null; // {received, sent, since}: bytes at the last change of what we received
    this.mediaWatch = setInterval(async () => {
      if (pc !== this.pc) return;
      let received = 0;
      let sent = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'transport') {
          received += r.bytesReceived ?? 0;
          sent += r.bytesSent ?? 0;
        }
      });
      const now = Date.now();
      const connected = ['connected', 'completed'].includes(pc.iceConnectionState);
      if (!connected || !last || received !== last.received) {
        last = { received, sent, since: now };
        return;
      }
      // Only where the restart is in place and cheap: a session restart on a false alarm is not.
      if (this.iceRestartEnabled && now - last.since >= MEDIA_SILENCE_MS && sent > last.sent && !this.iceRestart) {
        this.counters.mediaSilences += 1;
        last = { received, sent, since: now };
        this._recoverIce(`nothing received for ${MEDIA_SILENCE_MS} ms`);
      }
    }, MEDIA_WATCH_MS);
  }

  _iceRestartEnded() {
    if (!this.iceRestart) return;
    clearTimeout(this.iceRestart.giveUp);
    this.iceRestart = null;
  }

  /**
   * The bridge's transport after an in-place ICE restart (transport-info tagged with its generation): its new
   * credentials into our offer, answered (Chrome makes new credentials of ours and gathers again), then its
   * candidates, then our new transport back to the focus, tagged with the same generation.
   */
  async _applyIceRestart(t) {
    const pc = this.pc;
    const remote = this.remote;
    if (!pc || !remote) return;
    if (t.iceGeneration <= this.iceGeneration || !t.ufrag || !t.pwd) {
      this.counters.iceRestartsIgnored += 1;
      return;
    }
    this.iceGeneration = t.iceGeneration;
    remote.restartIce(t.ufrag, t.pwd);
    // Candidates found while answering travel with the answer's transport or right after it.
    this.pendingCandidates = [];
    await this._renegotiate();
    if (pc !== this.pc) return;
    remote.addCandidates(t.candidates);
    const mid = remote.contents[0].name;
    for (const c of t.candidates) await pc.addIceCandidate({ candidate: candidateToSdp(c), sdpMid: mid, sdpMLineIndex: 0 });
    const localSdp = pc.localDescription.sdp;
    const xml = iceRestartTransportXml(remote, localSdp, t.iceGeneration, { nick: this.nick, responder: this.xmpp.jid });
    const late = (this.pendingCandidates ?? []).filter((c) => !localSdp.includes(c.candidate.trim()));
    this.pendingCandidates = null;
    await this._sendJingle(xml, 'transport-info');
    if (late.length) this._sendCandidates(late);
    this.counters.iceRestartsApplied += 1;
  }

  _requestRestart(why) {
    const now = Date.now();
    if (!this.remote || now - this.restartAt < 10000) return;
    this.restartAt = now;
    this.counters.restartsAsked += 1;
    const xml = sessionTerminateXml(this.remote.sid, {
      initiator: this.remote.initiator, condition: 'connectivity-error', text: why,
      bridgeSessionId: this.remote.bridgeSession?.id, restart: true,
    });
    this._sendJingle(xml, 'session-terminate').catch((e) => console.warn(e.message));
    this._closeSession();
    this._set({ jingle: 'restarting' });
  }

  _closeSession() {
    clearTimeout(this.iceTimer);
    this.iceTimer = null;
    this._iceRestartEnded();
    this.iceGeneration = 0;
    clearInterval(this.mediaWatch);
    this.mediaWatch = null;
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    this._closeChannel();
    this.remote = null;
    for (const p of this.participants.values()) p.tracks.clear();
    this._set({ ice: 'closed', jingle: 'none' });
    this._participantsChanged();
  }

  // ------------------------------------------------------------------------------------ bridge channel

  _openChannel(urls) {
    this._closeChannel();
    if (!urls.length) {
      // A bridge without colibri-ws: media still flows, at the bridge's default layers.
      console.info('bridge channel: the session-initiate offers no <web-socket>');
      return;
    }
    const ch = new BridgeChannel(urls[0]);
    this.channel = ch;
    const changed = () => this._emit('channel', ch.snapshot());
    ch.addEventListener('open', changed);
    ch.addEventListener('close', changed);
    ch.addEventListener('server-hello', changed);
    ch.addEventListener('forwarded-sources', (e) => {
      this.forwardedSources = e.detail;
      this._emit('forwarded-sources', e.detail);
    });
    ch.addEventListener('dominant-speaker', (e) => {
      this.dominantSpeaker = e.detail.id;
      this._emit('dominant-speaker', e.detail);
    });
    ch.addEventListener('sender-constraints', (e) => this._onSenderConstraints(e.detail));
    ch.addEventListener('message', (e) => this._onChannelMessage(e.detail));
    if (this.receiverConstraints) ch.setConstraints(this.receiverConstraints);
  }

  _closeChannel() {
    if (this.channel) {
      this.channel.close();
      this.channel = null;
      this._emit('channel', null);
    }
  }

  /** What the layout needs from the bridge (layout.js receiverConstraints); kept across sessions. */
  setReceiverConstraints(constraints) {
    this.receiverConstraints = constraints;
    if (this.channel) this.channel.setConstraints(constraints);
  }

  /** The name of a remote participant's (first) video source, as the focus signalled it. */
  videoSourceOf(owner) {
    const sources = this.remote?.activeSources() ?? [];
    // A screen share's entry (participantList) is named after its source.
    if (sources.some((s) => s.name === owner && s.videoType === 'desktop')) return owner;
    return sources.find((s) => s.owner === owner && s.media === 'video' && s.videoType !== 'desktop')?.name ?? null;
  }

  // ------------------------------------------------------------------------------------ local controls

  applyLocalMute() {
    for (const t of this.localStream?.getAudioTracks() ?? []) t.enabled = !this.audioMuted;
    for (const t of this.localStream?.getVideoTracks() ?? []) t.enabled = !this.videoMuted;
  }

  setAudioMuted(muted) {
    if (!this.localStream?.getAudioTracks().length) muted = true;
    this.audioMuted = muted;
    if (!muted) this.mutedByModerator.audio = false;
    this.applyLocalMute();
    if (this.state.joined) this.xmpp.send(this._presence(false));
    this._participantsChanged();
  }

  setVideoMuted(muted) {
    if (!this.localStream?.getVideoTracks().length) muted = true;
    this.videoMuted = muted;
    if (!muted) this.mutedByModerator.video = false;
    this.applyLocalMute();
    if (this.state.joined) this.xmpp.send(this._presence(false));
    this._participantsChanged();
  }

  /** Owner only: sets (or with "" clears) the room password through the MUC owner config form. */
  async setPassword(password) {
    if (this.affiliation !== 'owner') throw new Error('only the room owner can set a password');
    const form = await this.xmpp.iq($iq({ type: 'get', to: this.roomJid }).c('query', { xmlns: MUC_OWNER }), 'room config');
    const vars = new Set([...form.getElementsByTagNameNS('jabber:x:data', 'field')].map((f) => f.getAttribute('var')));
    if (!vars.has('muc#roomconfig_roomsecret')) throw new Error('the room has no password setting');
    const iq = $iq({ type: 'set', to: this.roomJid }).c('query', { xmlns: MUC_OWNER }).c('x', { xmlns: 'jabber:x:data', type: 'submit' });
    const field = (name, value) => iq.c('field', { var: name }).c('value').t(value).up().up();
    field('FORM_TYPE', 'http://jabber.org/protocol/muc#roomconfig');
    if (vars.has('muc#roomconfig_passwordprotectedroom')) field('muc#roomconfig_passwordprotectedroom', password ? '1' : '0');
    field('muc#roomconfig_roomsecret', password);
    await this.xmpp.iq(iq, 'set room password');
    this._setLocked(Boolean(password));
  }

  async stats() {
    const out = {};
    const pc = this.pc;
    const remote = this.remote;
    if (!pc || !remote) return out;
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      // A screen share counts apart from its owner's camera, under its source name.
      const src = r.mid !== undefined ? remote.sourceOfMid(r.mid) : undefined;
      const owner = (src?.videoType === 'desktop' ? src.name : src?.owner) ?? remote.ownerOfSsrc(r.ssrc);
      if (!owner) return;
      const s = (out[owner] ??= {
        framesDecoded: 0, frameWidth: 0, frameHeight: 0, videoPacketsReceived: 0, videoPacketsLost: 0,
        freezeCount: 0, totalFreezesDuration: 0, totalSamplesReceived: 0, audioPacketsReceived: 0, audioLevel: 0,
        videoCodec: null, audioCodec: null, audioBytesReceived: 0, audioDiscarded: 0, concealedSamples: 0,
        videoBytesReceived: 0, nackCount: 0, pliCount: 0, retransmittedPacketsReceived: 0,
        retransmittedBytesReceived: 0, framesDropped: 0, keyFramesDecoded: 0, audioPacketsLost: 0,
        concealmentEvents: 0, fecPacketsReceived: 0,
      });
      if (r.kind === 'video') {
        s.videoCodec = codecOfStats(report, r) ?? s.videoCodec;
        s.framesDecoded += r.framesDecoded ?? 0;
        s.frameWidth = Math.max(s.frameWidth, r.frameWidth ?? 0);
        s.frameHeight = Math.max(s.frameHeight, r.frameHeight ?? 0);
        s.videoPacketsReceived += r.packetsReceived ?? 0;
        s.videoPacketsLost += r.packetsLost ?? 0;
        s.freezeCount += r.freezeCount ?? 0;
        s.totalFreezesDuration += r.totalFreezesDuration ?? 0;
        // Loss repair: NACKs this page sent, and the RTX that answered (what the bridge retransmitted).
        s.videoBytesReceived += r.bytesReceived ?? 0;
        s.nackCount += r.nackCount ?? 0;
        s.pliCount += r.pliCount ?? 0;
        s.retransmittedPacketsReceived += r.retransmittedPacketsReceived ?? 0;
        s.retransmittedBytesReceived += r.retransmittedBytesReceived ?? 0;
        s.framesDropped += r.framesDropped ?? 0;
        s.keyFramesDecoded += r.keyFramesDecoded ?? 0;
      } else if (r.kind === 'audio') {
        s.totalSamplesReceived += r.totalSamplesReceived ?? 0;
        s.audioPacketsReceived += r.packetsReceived ?? 0;
        s.audioBytesReceived += r.bytesReceived ?? 0; // payload bytes: RED's carry the redundant blocks too
        s.audioLevel = Math.max(s.audioLevel, r.audioLevel ?? 0);
        s.audioCodec = codecOfStats(report, r) ?? s.audioCodec;
        // What the jitter buffer threw away; audio loss as heard: concealed samples are what it made up for
        // packets lost after any repair (RED, FEC), packetsLost the RTP gaps.
        s.audioDiscarded += r.packetsDiscarded ?? 0;
        s.audioPacketsLost += r.packetsLost ?? 0;
        s.concealedSamples += r.concealedSamples ?? 0;
        s.concealmentEvents += r.concealmentEvents ?? 0;
        s.fecPacketsReceived += r.fecPacketsReceived ?? 0;
      }
    });
    return out;
  }

  /**
   * What quality.js needs, cumulative: {at (ms), participants (stats()), rttMs, bytesSent, bytesReceived,
   * uploadLossFraction (the bridge's receiver reports of our media, worst stream)}.
   */
  async qualityReport() {
    const at = performance.now();
    const participants = await this.stats();
    const t = await this.transportStats();
    let uploadLossFraction = null;
    if (this.pc) {
      (await this.pc.getStats()).forEach((r) => {
        if (r.type === 'remote-inbound-rtp' && typeof r.fractionLost === 'number') {
          uploadLossFraction = Math.max(uploadLossFraction ?? 0, r.fractionLost);
        }
      });
    }
    return {
      at, participants, uploadLossFraction,
      rttMs: typeof t?.currentRoundTripTime === 'number' ? Math.round(t.currentRoundTripTime * 1000) : null,
      bytesSent: t?.bytesSent ?? 0, bytesReceived: t?.bytesReceived ?? 0,
    };
  }

  /** Our microphone's outbound-rtp streams: [{ssrc, codec ('audio/red' when sent as RED), packetsSent}]. */
  async sentAudio() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    const out = [];
    report.forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'audio') {
        out.push({ ssrc: r.ssrc, codec: codecOfStats(report, r), packetsSent: r.packetsSent ?? 0 });
      }
    });
    return out;
  }

  /**
   * The transport as a whole: bytes and packets it received and sent (RTP and RTCP, after SRTP), the
   * selected candidate pair's addresses, and the receive-side estimate when Chromium gives one.
   */
  async transportStats() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    const out = { bytesReceived: 0, bytesSent: 0, packetsReceived: 0, packetsSent: 0, local: null, remote: null,
      localType: null, remoteType: null, localProtocol: null, relayProtocol: null,
      availableIncomingBitrate: null, currentRoundTripTime: null };
    let pairId = null;
    report.forEach((r) => {
      if (r.type !== 'transport') return;
      out.bytesReceived += r.bytesReceived ?? 0;
      out.bytesSent += r.bytesSent ?? 0;
      out.packetsReceived += r.packetsReceived ?? 0;
      out.packetsSent += r.packetsSent ?? 0;
      pairId = r.selectedCandidatePairId ?? pairId;
    });
    const pair = pairId ? report.get(pairId) : null;
    if (pair) {
      const addr = (id) => { const c = report.get(id); return c ? `${c.address ?? c.ip}:${c.port}` : null; };
      out.local = addr(pair.localCandidateId);
      out.remote = addr(pair.remoteCandidateId);
      // The pair's kind: 'relay' on our side when media goes through TURN (relayProtocol: how we reach it).
      const local = report.get(pair.localCandidateId);
      out.localType = local?.candidateType ?? null;
      out.localProtocol = local?.protocol ?? null;
      out.relayProtocol = local?.relayProtocol ?? null;
      out.remoteType = report.get(pair.remoteCandidateId)?.candidateType ?? null;
      out.availableIncomingBitrate = pair.availableIncomingBitrate ?? null;
      out.currentRoundTripTime = pair.currentRoundTripTime ?? null;
    }
    return out;
  }

  /**
   * Our camera's outbound-rtp streams, one per simulcast layer (one with SVC), lowest first: [{ssrc, layer
   * (the index in the SIM group), codec, scalabilityMode, frameWidth, frameHeight, bytesSent, ...}].
   */
  async sentVideo() {
    if (!this.pc) return [];
    const out = [];
    const primaries = this.simulcast?.primaries ?? [];
    const report = await this.pc.getStats();
    // The sender's own bandwidth estimate (GoogCC, fed by the bridge's transport-cc feedback).
    let availableOutgoingBitrate = null;
    report.forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate !== undefined) {
        availableOutgoingBitrate = r.availableOutgoingBitrate;
      }
    });
    report.forEach((r) => {
      if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
      const layer = primaries.indexOf(r.ssrc);
      out.push({
        ssrc: r.ssrc, layer: layer < 0 ? null : layer, rid: r.rid ?? null,
        frameWidth: r.frameWidth ?? 0, frameHeight: r.frameHeight ?? 0,
        codec: codecOfStats(report, r), scalabilityMode: r.scalabilityMode ?? null,
        framesEncoded: r.framesEncoded ?? 0, bytesSent: r.bytesSent ?? 0, active: r.active ?? null,
        keyFramesEncoded: r.keyFramesEncoded ?? 0, pliCount: r.pliCount ?? 0, nackCount: r.nackCount ?? 0,
        retransmittedPacketsSent: r.retransmittedPacketsSent ?? 0,
        qualityLimitationReason: r.qualityLimitationReason ?? null, encoderImplementation: r.encoderImplementation ?? null,
        targetBitrate: r.targetBitrate ?? null, availableOutgoingBitrate,
      });
    });
    return out.sort((a, b) => (a.layer ?? 0) - (b.layer ?? 0) || a.frameHeight - b.frameHeight);
  }

  /** What the bridge last asked of our camera (maxHeight), and which of its encodings are on now. */
  senderState() {
    const sender = this._videoSender();
    const encodings = sender ? sender.getParameters().encodings ?? [] : [];
    return {
      sourceName: `${this.nick}-v0`,
      maxHeight: this.senderMaxHeight,
      active: encodings.map((e) => e.active !== false),
      scales: encodings.map((e) => e.scaleResolutionDownBy ?? 1),
      trackSize: sender?.track ? smallerSide(sender.track) : 0,
    };
  }

  /** Ends the session (session-terminate to the focus), leaves the room and closes the connection. */
  /**
   * Logs in as `username` on the auth domain (the login prompt of a secure domain), replacing the anonymous
   * session; then `join()` again starts the room. Rejects with AuthFailed on a wrong name or password.
   */
  async login(username, password) {
    const old = this.xmpp;
    this.xmpp = null;
    if (old) old.disconnect('logging in');
    this.credentials = { username, password };
    this._set({ xmpp: 'connecting', focus: 'none', error: null });
    try {
      await this.join(this.password);
    } catch (e) {
      if (e instanceof AuthFailed) this.credentials = null;
      throw e;
    }
  }

  async leave() {
    if (this.left) return;
    this.left = true;
    if (this.remote && this.pc && this.xmpp?.status === 'connected') {
      const xml = sessionTerminateXml(this.remote.sid, { initiator: this.remote.initiator, condition: 'success', text: 'left' });
      try {
        await this._sendJingle(xml, 'session-terminate');
      } catch (e) {
        console.info('session-terminate:', e.message);
      }
    }
    this._closeSession();
    this.e2ee?.close();
    if (this.xmpp && this.xmpp.status === 'connected') {
      this._leaveLobby();
      if (this.knocking) this.xmpp.send($pres({ to: `${this.knocking.jid}/${this.nick}`, type: 'unavailable' }));
      this.xmpp.send($pres({ to: `${this.roomJid}/${this.nick}`, type: 'unavailable' }));
      this.xmpp.disconnect('left');
    }
    this.participants.clear();
    this._set({ joined: false, xmpp: 'disconnected' });
    this._emit('ended', { reason: 'You left the meeting.' });
  }
}

export { AuthFailed, JingleError, StanzaError };
