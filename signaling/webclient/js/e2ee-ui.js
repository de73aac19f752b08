// End-to-end encryption in the call: the toolbar button and passphrase dialog, the "E2EE" badge, a lock on
// the tiles of those who encrypt, and the "encrypted" placeholder over a tile whose media this page cannot
// decrypt (no passphrase, or another one). The worker drops those frames (e2ee-worker.js), so the tile
// would freeze or stay black; the placeholder says why.

import { h } from './dom.js';
import { icons } from './icons.js';
import { MAX_PASSPHRASE } from './e2ee-frame.js';
import { e2eeSupported, passphraseProblem } from './e2ee.js';

/** The placeholder's text for participant `p` (participantList's entry) on a page that encrypts or not, or null. */
export function placeholderText(p, weEncrypt) {
  if (p.local) return null;
  const name = p.name ?? p.id;
  if (p.e2eeState === 'wrong-key') return `${name} is encrypted with another passphrase.`;
  if (p.e2eeState === 'no-key' || (p.e2ee && !weEncrypt && p.e2eeState !== 'clear')) {
    return `${name} is end-to-end encrypted. Turn on encryption with the meeting's passphrase to see and hear them.`;
  }
  return null;
}

export function installE2eeUi({ conf, toolbar, before, topbar }) {
  const btn = h('button.tool#toggle-e2ee', { type: 'button', title: 'End-to-end encryption', 'aria-pressed': 'false', html: `${icons.lock}<span class="tool-label">Encrypt</span>` });
  btn.hidden = !conf.e2eeAllowed; // the server does not offer it (config.json's e2ee.enabled)
  toolbar.insertBefore(btn, before);
  const badge = h('span.e2ee-badge#e2ee-badge', { hidden: true, title: 'Your audio and video are end-to-end encrypted', html: `${icons.lock}<span>E2EE</span>` });
  topbar?.insertBefore(badge, topbar.querySelector('.spacer'));

  const dialog = () => {
    const input = h('input#e2ee-passphrase', { type: 'password', placeholder: 'Passphrase', autocomplete: 'off', 'aria-label': 'Meeting passphrase', maxlength: String(MAX_PASSPHRASE) });
    const err = h('p.hint.error#e2ee-error', { role: 'alert' });
    const close = () => back.remove();
    const apply = (passphrase) => {
      try {
        conf.setE2ee(passphrase);
        close();
      } catch (x) {
        err.textContent = x.message;
      }
    };
    const on = conf.e2ee?.enabled;
    const form = h('form.dialog#e2ee-dialog', {
      onsubmit: (e) => {
        e.preventDefault();
        const problem = passphraseProblem(input.value);
        if (problem) err.textContent = problem;
        else apply(input.value);
      },
    },
    h('div.dialog-icon', { html: icons.lock }),
    h('h3', {}, 'End-to-end encryption'),
    h('p.sub', {}, 'Everyone who enters the same passphrase sees and hears each other; the server forwards only ciphertext. Share the passphrase another way than this meeting.'),
    e2eeSupported() ? input : null,
    e2eeSupported() ? err : h('p.hint.error#e2ee-error', {}, 'This browser cannot encrypt media end to end.'),
    h('div.dialog-actions', {},
      on ? h('button.btn.ghost#e2ee-off', { type: 'button', onclick: () => apply('') }, 'Turn off') : null,
      h('span.spacer'),
      h('button.btn.ghost#e2ee-cancel', { type: 'button', onclick: close }, 'Cancel'),
      e2eeSupported() ? h('button.btn.primary#e2ee-submit', { type: 'submit' }, on ? 'Change' : 'Encrypt') : null));
    const back = h('div.backdrop', { onclick: (e) => { if (e.target === back) close(); } }, form);
    document.body.append(back);
    (e2eeSupported() ? input : form.querySelector('#e2ee-cancel')).focus();
  };
  btn.addEventListener('click', dialog);

  const paint = (people) => {
    const on = Boolean(conf.e2ee?.enabled);
    badge.hidden = !on;
    btn.classList.toggle('active', on);
    btn.setAttribute('aria-pressed', String(on));
    btn.querySelector('.tool-label').textContent = on ? 'Encrypted' : 'Encrypt';
    for (const tile of document.querySelectorAll('.tile[data-id]')) {
      const p = people.find((x) => x.id === tile.dataset.id);
      const text = p ? placeholderText(p, on) : null;
      tile.classList.toggle('encrypted', Boolean(text));
      let cover = tile.querySelector('.tile-encrypted');
      if (text && !cover) {
        cover = h('div.tile-encrypted', { role: 'img' }, h('span.tile-encrypted-icon', { html: icons.lock }), h('strong', {}, 'Encrypted'), h('span.tile-encrypted-text'));
        tile.append(cover);
      }
      if (cover && !text) cover.remove();
      if (text) {
        cover.querySelector('.tile-encrypted-text').textContent = text;
        cover.setAttribute('aria-label', text);
      }
      const lock = tile.querySelector('.badge.e2ee');
      const locked = Boolean(p?.e2ee);
      if (locked && !lock) tile.querySelector('.tile-badges')?.prepend(h('span.badge.e2ee', { title: 'End-to-end encrypted', 'aria-label': 'end-to-end encrypted', html: icons.lock }));
      if (!locked && lock) lock.remove();
    }
  };
  conf.addEventListener('participants', (e) => paint(e.detail));
  paint(conf.participantList());

  return {
    /** Opens the dialog, types `passphrase` ('' turns it off) and submits, as a person would; the error line. */
    setE2ee: (passphrase) => {
      btn.click();
      if (passphrase) {
        document.getElementById('e2ee-passphrase').value = passphrase;
        document.getElementById('e2ee-submit').click();
      } else {
        document.getElementById('e2ee-off')?.click();
      }
      const err = document.getElementById('e2ee-error')?.textContent ?? '';
      document.getElementById('e2ee-cancel')?.click();
      return err;
    },
    /** The worker's counters and receivers, and what each tile shows: {id: placeholder text or null}. */
    e2ee: async () => ({
      supported: e2eeSupported(),
      enabled: Boolean(conf.e2ee?.enabled),
      worker: conf.e2ee ? await conf.e2ee.stats() : null,
      placeholders: Object.fromEntries([...document.querySelectorAll('.tile[data-id]')].map((t) => [t.dataset.id, t.querySelector('.tile-encrypted-text')?.textContent ?? null])),
    }),
    /** Tests: attach the transforms (even without a passphrase) and remember what passes them. */
    e2eeRecord: (on) => {
      conf._e2eeStart()?.record(on);
      return Boolean(conf.e2ee);
    },
  };
}
