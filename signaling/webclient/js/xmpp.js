// XMPP over WebSocket (RFC 7395) through strophe.js, which index.html loads as a classic script (its
// UMD build bundles its one dependency; its ESM build imports a bare 'abab' specifier a browser cannot
// resolve without a bundler). This module is the only place that touches the Strophe global.

const lib = globalThis.strophe;
if (!lib || !lib.Strophe) throw new Error('strophe.js did not load (/node_modules/strophe.js/dist/strophe.umd.min.js)');
export const { Strophe, $iq, $pres, $msg, $build } = lib;

export const STATUS_NAMES = Object.fromEntries(Object.entries(Strophe.Status).map(([k, v]) => [v, k.toLowerCase()]));

export class StanzaError extends Error {
  constructor(stanza, what) {
    const err = stanza && stanza.querySelector ? stanza.querySelector('error') : null;
    const condition = err && err.firstElementChild ? err.firstElementChild.localName : stanza ? 'unknown' : 'timeout';
    const text = err ? err.querySelector('text')?.textContent : undefined;
    super(`${what}: ${condition}${text ? ` (${text})` : ''}`);
    this.condition = condition;
    this.stanza = stanza;
  }
}

/** The server refused our login (SASL failure): `reason` is its text (e.g. "expired: the token has expired"). */
export class AuthFailed extends Error {
  constructor(reason) {
    super(`not authorized${reason ? `: ${reason}` : ''}`);
    this.condition = 'not-authorized';
    this.reason = reason || '';
  }
}

/** Parses an XML string (from jingle-sdp.js) into an Element that Strophe builders can import. */
export function xmlElement(xml) {
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  if (doc.querySelector('parsererror')) throw new Error(`bad XML built: ${xml.slice(0, 200)}`);
  return doc.documentElement;
}

export class XmppClient extends EventTarget {
  constructor(serviceUrl) {
    super();
    this.conn = new Strophe.Connection(serviceUrl);
    this.status = 'disconnected';
    this.jid = null;
    this.wasConnected = false;
  }

  _state(status, detail) {
    this.status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: { status, detail } }));
  }

  /**
   * Anonymous login to `domain` (SASL ANONYMOUS), or with `password` as `domain`'s account (a bare JID:
   * SCRAM or PLAIN, whichever the server offers first); resolves once the resource is bound, rejects with
   * AuthFailed (the server's reason) when the login is refused.
   */
  connect(domain, password = null) {
    return new Promise((resolve, reject) => {
      let done = false;
      this.conn.connect(domain, password, (status, condition, elem) => {
        const name = STATUS_NAMES[status] ?? String(status);
        if (status === Strophe.Status.CONNECTED) {
          this.jid = this.conn.jid;
          this.wasConnected = true;
          this._state('connected');
          done = true;
          resolve(this.jid);
        } else if (status === Strophe.Status.AUTHFAIL) {
          const reason = elem?.getElementsByTagName?.('text')[0]?.textContent ?? condition ?? '';
          this._state('failed', reason || name);
          if (!done) {
            done = true;
            reject(new AuthFailed(reason));
          }
        } else if (status === Strophe.Status.CONNFAIL || status === Strophe.Status.ERROR) {
          this._state('failed', condition || name);
          if (!done) {
            done = true;
            reject(new Error(`XMPP ${name}${condition ? `: ${condition}` : ''}`));
          }
        } else if (status === Strophe.Status.DISCONNECTED) {
          this._state('disconnected', condition);
          if (!done) {
            done = true;
            reject(new Error(`XMPP disconnected${condition ? `: ${condition}` : ''}`));
          }
        } else {
          this._state(name);
        }
      });
    });
  }

  /** Sends an IQ and resolves with the result stanza; rejects with StanzaError on error or timeout. */
  iq(builder, what = 'iq', timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      this.conn.sendIQ(builder, resolve, (stanza) => reject(new StanzaError(stanza, what)), timeoutMs);
    });
  }

  send(builder) {
    this.conn.send(builder);
  }

  /** Strophe handler; return true from `fn` to keep it. */
  on(fn, { ns = null, name = null, type = null, from = null } = {}) {
    return this.conn.addHandler(fn, ns, name, type, null, from, { matchBareFromJid: false });
  }

  off(ref) {
    this.conn.deleteHandler(ref);
  }

  disconnect(reason = 'leaving') {
    if (this.status === 'connected') {
      this.conn.flush();
      this.conn.disconnect(reason);
    }
  }
}
