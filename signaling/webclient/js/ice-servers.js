// STUN and TURN servers from the XMPP server's XEP-0215 answer (urn:xmpp:extdisco:2), as RTCPeerConnection
// iceServers; and ?forceRelay=1, which makes the page use relayed candidates only (iceTransportPolicy
// 'relay', for testing TURN). Pure: no DOM beyond reading the answer's elements' attributes.

export const NS_EXTDISCO = 'urn:xmpp:extdisco:2';

// What we take of an answer: more services than this are ignored (the server sends 3 to 4 per host).
const MAX_SERVICES = 16;
const HOST = /^[A-Za-z0-9.:-]{1,253}$/;
const SCHEMES = { stun: ['udp'], turn: ['udp', 'tcp'], turns: ['tcp'] };

/** The `<service/>` children of a `<services/>` element as plain objects (attributes only). */
export function servicesFromXml(element) {
  if (!element) return [];
  return [...element.children]
    .filter((c) => c.localName === 'service')
    .slice(0, MAX_SERVICES)
    .map((c) => Object.fromEntries(['type', 'host', 'port', 'transport', 'username', 'password', 'expires', 'restricted']
      .map((k) => [k, c.getAttribute(k)])));
}

/**
 * RTCIceServer entries for the services a client can use: stun, turn (udp, tcp) and turns (tcp), each with a
 * well-formed host and port; TURN entries only with credentials. Entries that share credentials share an
 * RTCIceServer. Returns { iceServers, expires (ms since the epoch, the earliest expiry; null: none), ignored }.
 */
export function iceServersFromServices(services) {
  const servers = [];
  let expires = null;
  let ignored = 0;
  for (const s of services.slice(0, MAX_SERVICES)) {
    const port = Number(s.port);
    const transport = (s.transport || 'udp').toLowerCase();
    const kinds = SCHEMES[s.type];
    if (!kinds || !kinds.includes(transport) || !HOST.test(s.host ?? '') || !(Number.isInteger(port) && port > 0 && port < 65536)) {
      ignored += 1;
      continue;
    }
    const host = s.host.includes(':') ? `[${s.host}]` : s.host;
    if (s.type === 'stun') {
      servers.push({ urls: [`stun:${host}:${port}`] });
      continue;
    }
    if (!s.username || !s.password) {
      ignored += 1;
      continue;
    }
    const url = `${s.type}:${host}:${port}?transport=${transport}`;
    const same = servers.find((e) => e.username === s.username && e.credential === s.password);
    if (same) same.urls.push(url);
    else servers.push({ urls: [url], username: s.username, credential: s.password });
    const when = Date.parse(s.expires ?? '');
    if (Number.isFinite(when)) expires = expires === null ? when : Math.min(expires, when);
  }
  return { iceServers: servers, expires, ignored };
}

/** ?forceRelay=1 (or true, yes, on): relayed candidates only. */
export function forceRelayOption(search = '') {
  const raw = new URLSearchParams(search).get('forceRelay');
  return raw !== null && ['1', 'true', 'yes', 'on'].includes(raw.trim().toLowerCase());
}
