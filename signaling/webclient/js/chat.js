// Chat: room messages (MUC groupchat) and private messages (type "chat" to an occupant's room JID), as
// Jitsi clients send them: <body> and the sender's display name in <nick xmlns="http://jabber.org/protocol/nick">.
// Pure parsing and bookkeeping here; conference.js sends and receives the stanzas, chat-panel.js shows them.
// Remote text is only ever put in text nodes; links are made from http(s) URLs alone.

export const NICK_NS = 'http://jabber.org/protocol/nick';
export const DELAY_NS = 'urn:xmpp:delay';
export const MUC_USER_NS = 'http://jabber.org/protocol/muc#user';

/** Longest message we send (characters): far under the server's stanza limit (256 KiB by default). */
export const MAX_CHAT_CHARS = 4000;
/** Longest body we show from others: a bigger one is refused and counted, not cut. */
export const MAX_RECEIVED_CHARS = 16000;
/** Messages kept in the log (oldest dropped first). */
export const MAX_LOG = 500;
const MAX_NAME_CHARS = 64;

export class ChatError extends Error {}

/** The text to send, trimmed; throws ChatError with a message for people when it cannot be sent. */
export function validateMessage(text) {
  const t = typeof text === 'string' ? text.trim() : '';
  if (!t) throw new ChatError('Type a message first.');
  if (t.length > MAX_CHAT_CHARS) {
    throw new ChatError(`This message is too long: ${t.length} characters, the limit is ${MAX_CHAT_CHARS}.`);
  }
  return t;
}

function child(st, ns, name) {
  return [...st.children].find((c) => c.localName === name && (ns === null || c.namespaceURI === ns)) ?? null;
}

/**
 * A chat message from a <message> stanza of `roomJid`, or null when it is not one (no body, another room,
 * not groupchat/chat). Throws ChatError for a body that is too long (the caller counts it).
 * {from (nick), name, text, private, time (ms), delayed}
 */
export function parseChatMessage(st, roomJid) {
  const type = st.getAttribute('type') || 'normal';
  if (type !== 'groupchat' && type !== 'chat') return null;
  const from = st.getAttribute('from') || '';
  const slash = from.indexOf('/');
  if (slash < 0 || from.slice(0, slash) !== roomJid) return null;
  const nick = from.slice(slash + 1);
  const body = child(st, null, 'body');
  if (!body || !nick) return null;
  const text = body.textContent ?? '';
  if (text.length > MAX_RECEIVED_CHARS) throw new ChatError(`a message of ${text.length} characters from ${nick}`);
  if (!text.trim()) return null;
  const shown = (child(st, NICK_NS, 'nick')?.textContent ?? '').trim().slice(0, MAX_NAME_CHARS);
  const stamp = child(st, DELAY_NS, 'delay')?.getAttribute('stamp');
  const delayedAt = stamp ? Date.parse(stamp) : NaN;
  return {
    from: nick,
    name: shown || null,
    text,
    private: type === 'chat',
    time: Number.isFinite(delayedAt) ? delayedAt : Date.now(),
    delayed: Number.isFinite(delayedAt),
  };
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

/**
 * The text cut into pieces to show: [{text}] and [{text, href}] for http(s) links (trailing punctuation
 * left out of the link). Never HTML: the panel makes text nodes and <a> elements from these.
 */
export function linkify(text) {
  const out = [];
  let at = 0;
  for (const m of text.matchAll(URL_RE)) {
    let url = m[0].replace(/[.,;:!?)\]]+$/, '');
    let href = null;
    try {
      const u = new URL(url);
      if (u.protocol === 'http:' || u.protocol === 'https:') href = u.href;
    } catch {
      href = null;
    }
    if (!href) continue;
    if (m.index > at) out.push({ text: text.slice(at, m.index) });
    out.push({ text: url, href });
    at = m.index + url.length;
  }
  if (at < text.length) out.push({ text: text.slice(at) });
  return out;
}

/** The messages of a call and the unread count while the panel is closed. */
export class ChatLog {
  constructor(limit = MAX_LOG) {
    this.limit = limit;
    this.messages = [];
    this.unread = 0;
    this.seq = 0;
  }

  /** Adds {from, name, text, private, time, mine, to?}; counts it unread unless `seen`. */
  add(msg, seen) {
    this.seq += 1;
    const entry = { id: this.seq, ...msg };
    this.messages.push(entry);
    if (this.messages.length > this.limit) this.messages.shift();
    if (!seen && !msg.mine) this.unread += 1;
    return entry;
  }

  markRead() {
    this.unread = 0;
  }
}
