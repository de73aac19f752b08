// The call's extras around app.js's grid: chat panel, raise hand, reactions, screen share, settings
// (devices, display name), connection-quality indicators with a details popover, keyboard shortcuts.
// They decorate app.js's tiles (.tile[data-id]) after it paints them, from the conference's events.

import { h } from './dom.js';
import { icons } from './icons.js';
import { ChatError, ChatLog, MAX_CHAT_CHARS, linkify } from './chat.js';
import { handQueue } from './hands.js';
import { QualityMonitor, connectionScore, parseEndpointStats } from './quality.js';
import { listDevices, loadPrefs, openTrack, savePrefs } from './devices.js';
import { REACTIONS } from './conference.js';

const QUALITY_EVERY_MS = 2000;
const ENDPOINT_STATS_EVERY_MS = 10000; // as Jitsi clients
const NAME_KEY = 'sluice.displayName';

const fmt = (x, unit, digits = 0) => (x === null || x === undefined ? '—' : `${Number(x).toFixed(digits)} ${unit}`);
const timeOf = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
const LEVEL_TEXT = { good: 'Good connection', fair: 'Fair connection', poor: 'Poor connection', unknown: 'Connection: measuring' };

function typing(e) {
  const t = e.target;
  return t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName));
}

/**
 * The settings dialog: camera, microphone and speaker (with a preview of the chosen camera) and the display
 * name. `replaceTrack(kind, track)` puts a new device's track in use; `setName(name)` when given. Resolves
 * when closed. Choices are remembered (devices.js).
 */
export function openSettings({ stream, replaceTrack, name = null, setName = null, toast = () => {} }) {
  return new Promise((resolve) => {
    const prefs = loadPrefs();
    const current = (kind) => stream?.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId ?? null;
    const camSel = h('select#settings-camera', { 'aria-label': 'Camera' });
    const micSel = h('select#settings-microphone', { 'aria-label': 'Microphone' });
    const spkSel = h('select#settings-speaker', { 'aria-label': 'Speaker' });
    const preview = h('video.settings-preview.mirror', { autoplay: true, muted: true, playsInline: true });
    const nameInput = setName ? h('input#settings-name', { type: 'text', value: name ?? '', maxlength: '48', 'aria-label': 'Display name' }) : null;
    const err = h('p.hint.error#settings-error');
    let previewTrack = null;
    const stopPreview = () => {
      if (previewTrack && !stream?.getTracks().includes(previewTrack)) previewTrack.stop();
      previewTrack = null;
    };
    const showPreview = async () => {
      stopPreview();
      try {
        const id = camSel.value;
        const using = stream?.getVideoTracks()[0];
        previewTrack = using && (!id || using.getSettings().deviceId === id) ? using : await openTrack('video', id || null);
        preview.srcObject = new MediaStream([previewTrack]);
      } catch (e) {
        err.textContent = `Camera preview failed: ${e.message}`;
      }
    };
    const fill = (sel, list, chosen) => {
      sel.replaceChildren(...list.map((d) => h('option', { value: d.deviceId }, d.label)));
      if (chosen && list.some((d) => d.deviceId === chosen)) sel.value = chosen;
      sel.disabled = list.length === 0;
    };
    listDevices().then((d) => {
      fill(camSel, d.cameras, current('video') ?? prefs.camera);
      fill(micSel, d.microphones, current('audio') ?? prefs.microphone);
      fill(spkSel, d.speakers, prefs.speaker ?? 'default');
      spkSel.disabled ||= !('setSinkId' in HTMLMediaElement.prototype);
      showPreview();
    });
    camSel.addEventListener('change', showPreview);
    const close = (v) => {
      stopPreview();
      back.remove();
      document.removeEventListener('keydown', onKey);
      resolve(v);
    };
    const onKey = (e) => { if (e.key === 'Escape') close(false); };
    document.addEventListener('keydown', onKey);
    const save = async (e) => {
      e.preventDefault();
      err.textContent = '';
      const next = { camera: camSel.value || null, microphone: micSel.value || null, speaker: spkSel.value || null };
      try {
        for (const [kind, id] of [['video', next.camera], ['audio', next.microphone]]) {
          if (!id || id === current(kind)) continue;
          const track = kind === 'video' && previewTrack && previewTrack.getSettings().deviceId === id ? previewTrack : await openTrack(kind, id);
          if (track === previewTrack) previewTrack = null; // now in use: not the preview's to stop
          await replaceTrack(kind, track);
        }
        if (next.speaker) await applySpeaker(next.speaker);
        savePrefs(next);
        if (nameInput && nameInput.value.trim() && nameInput.value.trim() !== name) {
          setName(nameInput.value.trim());
          localStorage.setItem(NAME_KEY, nameInput.value.trim());
        }
        toast('Settings saved.', 'ok');
        close(true);
      } catch (x) {
        err.textContent = `Could not switch: ${x.message}`;
      }
    };
    const row = (label, forId, control) => h('div.settings-row', {}, h('label.label', { for: forId }, label), control);
    const form = h('form.dialog.settings#settings-dialog', { onsubmit: save, 'aria-label': 'Settings' },
      h('h3', {}, 'Settings'),
      h('div.settings-grid', {},
        h('div.settings-fields', {},
          nameInput ? row('Display name', 'settings-name', nameInput) : null,
          row('Camera', 'settings-camera', camSel),
          row('Microphone', 'settings-microphone', micSel),
          row('Speaker', 'settings-speaker', spkSel)),
        preview),
      err,
      h('div.dialog-actions', {},
        h('span.spacer'),
        h('button.btn.ghost#settings-cancel', { type: 'button', onclick: () => close(false) }, 'Cancel'),
        h('button.btn.primary#settings-save', { type: 'submit' }, 'Save')));
    const back = h('div.backdrop', { onclick: (e) => { if (e.target === back) close(false); } }, form);
    document.body.append(back);
    (nameInput ?? camSel).focus();
  });
}

/** Plays every remote audio (and video) element on the chosen speaker. */
export async function applySpeaker(deviceId) {
  if (!('setSinkId' in HTMLMediaElement.prototype)) return;
  await Promise.all([...document.querySelectorAll('audio')].map((a) => (a.sinkId === deviceId ? null : a.setSinkId(deviceId).catch(() => {}))));
}

/**
 * Adds the extras to a rendered call. `toolbar`: the footer (buttons go before `before`), `body`: the
 * call body (panels go in it). Returns the test API (window.sluice gets it too).
 */
export function installCallExtras({ conf, toolbar, before, body, toast }) {
  const log = new ChatLog();
  const monitor = new QualityMonitor();
  let people = [];
  let quality = { local: null, remote: {} };
  let popoverFor = null;

  // ---- toolbar
  const chatBadge = h('span.unread#chat-unread', { hidden: true, 'aria-label': 'unread messages' });
  const chatBtn = h('button.tool#toggle-chat', { type: 'button', title: 'Chat (c)', 'aria-label': 'Chat', 'aria-expanded': 'false', 'aria-keyshortcuts': 'c', html: `${icons.chat}<span class="tool-label">Chat</span>` }, chatBadge);
  const handBtn = h('button.tool#raise-hand', { type: 'button', title: 'Raise your hand (h)', 'aria-pressed': 'false', 'aria-keyshortcuts': 'h', html: `${icons.hand}<span class="tool-label">Raise hand</span>` });
  const screenBtn = h('button.tool#share-screen', { type: 'button', title: 'Share your screen', 'aria-pressed': 'false', html: `${icons.screen}<span class="tool-label">Share</span>` });
  const reactBtn = h('button.tool#react', { type: 'button', title: 'Send a reaction', 'aria-haspopup': 'true', 'aria-expanded': 'false', html: `${icons.smile}<span class="tool-label">React</span>` });
  const settingsBtn = h('button.tool#open-settings', { type: 'button', title: 'Settings', html: `${icons.settings}<span class="tool-label">Settings</span>` });
  const reactMenu = h('div.react-menu#react-menu', { hidden: true, role: 'menu' },
    ...Object.entries(REACTIONS).map(([k, emoji]) => h('button.react-choice', { type: 'button', role: 'menuitem', 'aria-label': k, 'data-reaction': k, onclick: () => { react(k); reactMenu.hidden = true; reactBtn.setAttribute('aria-expanded', 'false'); } }, emoji)));
  const reactWrap = h('span.react-wrap', {}, reactBtn, reactMenu);
  for (const b of [chatBtn, handBtn, reactWrap, screenBtn, settingsBtn]) toolbar.insertBefore(b, before);

  // ---- chat panel
  const messages = h('ol.chat-messages#chat-messages', { 'aria-live': 'polite', 'aria-label': 'Messages' });
  const toSel = h('select#chat-to', { 'aria-label': 'Send to' }, h('option', { value: '' }, 'Everyone'));
  const input = h('textarea#chat-input', { rows: '2', placeholder: 'Message everyone', 'aria-label': 'Message' });
  const counter = h('span.chat-count#chat-count');
  const chatErr = h('p.hint.error#chat-error', { role: 'alert' });
  const send = (e) => {
    e?.preventDefault();
    chatErr.textContent = '';
    try {
      conf.sendChat(input.value, toSel.value || null);
      input.value = '';
      paintCount();
    } catch (x) {
      if (!(x instanceof ChatError)) throw x;
      chatErr.textContent = x.message;
    }
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) send(e);
  });
  const paintCount = () => {
    const n = input.value.trim().length;
    counter.textContent = n > MAX_CHAT_CHARS * 0.8 ? `${n} / ${MAX_CHAT_CHARS}` : '';
    counter.classList.toggle('over', n > MAX_CHAT_CHARS);
  };
  input.addEventListener('input', paintCount);
  toSel.addEventListener('change', () => { input.placeholder = toSel.value ? `Message ${toSel.selectedOptions[0].textContent} privately` : 'Message everyone'; });
  const chatPanel = h('aside.chat-panel#chat-panel', { 'aria-label': 'Chat' },
    h('div.panel-head', {}, h('h3', {}, 'Chat'), h('button.icon-btn#chat-close', { type: 'button', 'aria-label': 'Close chat', html: icons.close, onclick: () => toggleChat(false) })),
    messages,
    h('form.chat-form#chat-form', { onsubmit: send }, h('div.chat-to-row', {}, h('label.label', { for: 'chat-to' }, 'To'), toSel, counter), input, chatErr,
      h('button.btn.primary#chat-send', { type: 'submit' }, 'Send')));
  body.append(chatPanel);
  const handList = h('ol.hand-queue#hand-queue', { 'aria-label': 'Raised hands, first raised first' });
  const lowerAll = h('button.link#lower-all-hands', { type: 'button', hidden: true, onclick: () => conf.lowerHand('') }, 'Lower all');
  const handSection = h('div.hand-section#hand-section', { hidden: true }, h('div.hand-head', {}, h('h4', {}, 'Raised hands'), lowerAll), handList);
  document.getElementById('panel')?.insertBefore(handSection, document.getElementById('people'));

  const chatOpen = () => document.body.classList.contains('chat-open');
  const toggleChat = (open = !chatOpen()) => {
    document.body.classList.toggle('chat-open', open);
    chatBtn.setAttribute('aria-expanded', String(open));
    chatBtn.classList.toggle('active', open);
    if (open) {
      log.markRead();
      paintUnread();
      input.focus();
      messages.scrollTop = messages.scrollHeight;
    }
  };
  chatBtn.addEventListener('click', () => toggleChat());
  const paintUnread = () => {
    chatBadge.hidden = log.unread === 0;
    chatBadge.textContent = log.unread > 99 ? '99+' : String(log.unread);
  };
  const messageEl = (m) => {
    const text = h('p.chat-text');
    for (const piece of linkify(m.text)) {
      text.append(piece.href ? h('a', { href: piece.href, target: '_blank', rel: 'noopener noreferrer nofollow' }, piece.text) : document.createTextNode(piece.text));
    }
    const to = m.private ? (m.mine ? `privately to ${people.find((p) => p.id === m.to)?.name ?? m.to}` : 'privately') : null;
    return h(`li.chat-message${m.mine ? '.mine' : ''}${m.private ? '.private' : ''}`, { 'data-from': m.from },
      h('div.chat-meta', {}, h('span.chat-name', {}, m.name), to ? h('span.chat-private', {}, ` ${to}`) : null, h('time.chat-time', { datetime: new Date(m.time).toISOString() }, timeOf(m.time))),
      text);
  };
  conf.addEventListener('chat', (e) => {
    const m = log.add(e.detail, chatOpen());
    messages.append(messageEl(m));
    while (messages.children.length > log.limit) messages.firstChild.remove();
    messages.scrollTop = messages.scrollHeight;
    paintUnread();
    if (!chatOpen() && !m.mine) toast(`${m.name}${m.private ? ' (privately)' : ''}: ${m.text.slice(0, 80)}`);
  });
  conf.addEventListener('chat-error', (e) => {
    chatErr.textContent = e.detail;
    toast(e.detail, 'error');
  });

  // ---- hands, reactions, screen
  handBtn.addEventListener('click', () => conf.setRaisedHand(conf.raisedHand === null));
  reactBtn.addEventListener('click', () => {
    reactMenu.hidden = !reactMenu.hidden;
    reactBtn.setAttribute('aria-expanded', String(!reactMenu.hidden));
    if (!reactMenu.hidden) reactMenu.querySelector('button').focus();
  });
  const react = (k) => conf.sendReaction(k);
  conf.addEventListener('reaction', (e) => {
    const tile = document.querySelector(`.tile[data-id='${CSS.escape(e.detail.from)}']`);
    const burst = h('span.reaction-burst', { 'aria-hidden': 'true' }, REACTIONS[e.detail.reaction]);
    (tile ?? document.body).append(burst);
    setTimeout(() => burst.remove(), 2500);
  });
  screenBtn.addEventListener('click', async () => {
    try {
      if (conf.screen) await conf.stopScreenShare();
      else await conf.startScreenShare();
    } catch (x) {
      if (x?.name !== 'NotAllowedError') toast(`Screen sharing failed: ${x.message}`, 'error');
    }
  });
  settingsBtn.addEventListener('click', () => openSettings({
    stream: conf.localStream,
    replaceTrack: (kind, track) => conf.replaceLocalTrack(kind, track),
    name: conf.displayName,
    setName: (n) => conf.setDisplayName(n),
    toast,
  }));

  const paint = (list) => {
    people = list;
    const queue = handQueue(people);
    handBtn.classList.toggle('active', conf.raisedHand !== null);
    handBtn.setAttribute('aria-pressed', String(conf.raisedHand !== null));
    handBtn.querySelector('.tool-label').textContent = conf.raisedHand !== null ? 'Lower hand' : 'Raise hand';
    screenBtn.classList.toggle('active', Boolean(conf.screen));
    screenBtn.setAttribute('aria-pressed', String(Boolean(conf.screen)));
    screenBtn.querySelector('.tool-label').textContent = conf.screen ? 'Stop sharing' : 'Share';
    screenBtn.title = conf.screen ? 'Stop sharing your screen' : 'Share your screen';
    for (const tile of document.querySelectorAll('.tile[data-id]')) {
      const id = tile.dataset.id;
      const at = queue.indexOf(id);
      const badges = tile.querySelector('.tile-badges');
      tile.querySelector('.badge.hand')?.remove();
      if (at >= 0) badges.prepend(h('span.badge.hand', { title: `Hand raised (${at + 1} in line)`, 'aria-label': `hand raised, ${at + 1} in line`, html: icons.hand }, h('span.hand-order', {}, String(at + 1))));
      tile.dataset.hand = at >= 0 ? String(at + 1) : '';
      const p = people.find((x) => x.id === id);
      tile.classList.toggle('screen', Boolean(p?.screen));
      tile.setAttribute('aria-label', p ? `${p.name}${p.local && !p.screen ? ' (you)' : ''}${p.audioMuted && !p.screen ? ', muted' : ''}${at >= 0 ? ', hand raised' : ''}` : '');
      tile.tabIndex = 0;
      if (!tile.querySelector('.quality')) {
        const q = h('button.quality', { type: 'button', 'data-level': 'unknown', 'aria-label': LEVEL_TEXT.unknown, title: LEVEL_TEXT.unknown, html: icons.signal });
        q.addEventListener('click', (ev) => { ev.stopPropagation(); togglePopover(id); });
        tile.append(q);
      }
    }
    // Raised hands in the participants panel, in order.
    handSection.hidden = queue.length === 0;
    const moderator = conf.role === 'moderator';
    handList.replaceChildren(...queue.map((id) => {
      const p = people.find((x) => x.id === id);
      const lower = moderator && p && !p.local
        ? h('button.link.lower-hand', { type: 'button', 'data-id': id, 'aria-label': `Lower ${p.name}'s hand`, onclick: () => conf.lowerHand(id) }, 'Lower')
        : null;
      return h('li', { 'data-id': id }, h('span.hand-name', {}, p?.name ?? id), lower);
    }));
    lowerAll.hidden = !moderator || queue.length < 2;
    for (const li of document.querySelectorAll('li.person[data-id]')) {
      const at = queue.indexOf(li.dataset.id);
      if (at >= 0 && !li.querySelector('.person-hand')) li.insertBefore(h('span.person-hand', { title: 'Hand raised', html: icons.hand }), li.lastChild);
    }
    // Private message recipients: everyone else who is a participant.
    const chosen = toSel.value;
    const others = people.filter((p) => !p.local && !p.screen);
    toSel.replaceChildren(h('option', { value: '' }, 'Everyone'), ...others.map((p) => h('option', { value: p.id }, p.name)));
    toSel.value = others.some((p) => p.id === chosen) ? chosen : '';
    if (!toSel.value && chosen) toSel.dispatchEvent(new Event('change'));
    paintQuality();
    // A speaker choice applies to new audio elements too.
    const speaker = loadPrefs().speaker;
    if (speaker) applySpeaker(speaker);
  };
  conf.addEventListener('participants', (e) => paint(e.detail));

  // ---- connection quality
  const levelOf = (id) => {
    const p = people.find((x) => x.id === id);
    if (p?.local) return quality.local?.level ?? 'unknown';
    return quality.remote[id]?.level ?? 'unknown';
  };
  const paintQuality = () => {
    for (const tile of document.querySelectorAll('.tile[data-id]')) {
      const q = tile.querySelector('.quality');
      if (!q) continue;
      const level = levelOf(tile.dataset.id);
      q.dataset.level = level;
      q.setAttribute('aria-label', LEVEL_TEXT[level]);
      q.title = LEVEL_TEXT[level];
    }
    if (popoverFor) renderPopover();
  };
  const popover = h('div.popover#quality-popover', { role: 'dialog', 'aria-label': 'Connection details', hidden: true });
  document.body.append(popover);
  const renderPopover = () => {
    const id = popoverFor;
    const tile = document.querySelector(`.tile[data-id='${CSS.escape(id)}']`);
    if (!tile) { closePopover(); return; }
    const p = people.find((x) => x.id === id);
    const rows = [];
    if (p?.local && !p.screen) {
      const l = quality.local ?? {};
      rows.push(['Upload', fmt(l.uploadKbps, 'kbps')], ['Download', fmt(l.downloadKbps, 'kbps')],
        ['Loss (upload)', fmt(l.uploadLossPct, '%', 1)], ['Round trip to bridge', fmt(l.rttMs, 'ms')]);
    } else {
      const r = quality.remote[id] ?? {};
      rows.push(['Receiving', fmt(r.bitrateKbps, 'kbps')], ['Loss', fmt(r.lossPct, '%', 1)],
        ['Resolution', r.height ? `${r.width}×${r.height}` : '—'], ['Frame rate', fmt(r.fps, 'fps', 1)],
        ['Round trip to bridge', fmt(r.rttMs, 'ms')]);
      const rep = r.reported;
      if (rep) {
        rows.push(['Their upload', fmt(rep.uploadKbps, 'kbps')], ['Their loss', fmt(rep.uploadLossPct, '%', 1)],
          ['Their round trip', fmt(rep.rttMs, 'ms')]);
      }
    }
    const level = levelOf(id);
    popover.replaceChildren(
      h('div.popover-head', {}, h('span.quality-dot', { 'data-level': level }), h('strong', {}, LEVEL_TEXT[level]), h('span.spacer'), h('button.icon-btn#quality-close', { type: 'button', 'aria-label': 'Close', html: icons.close, onclick: closePopover })),
      h('p.sub', {}, p?.name ?? id),
      h('dl.quality-table', {}, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
    const r = tile.getBoundingClientRect();
    popover.style.left = `${Math.max(8, Math.min(window.innerWidth - 268, r.left + 8))}px`;
    popover.style.top = `${Math.max(8, Math.min(window.innerHeight - 300, r.top + 44))}px`;
    popover.dataset.for = id;
  };
  const closePopover = () => {
    popoverFor = null;
    popover.hidden = true;
  };
  const togglePopover = (id) => {
    if (popoverFor === id) return closePopover();
    popoverFor = id;
    popover.hidden = false;
    renderPopover();
    return undefined;
  };
  conf.addEventListener('endpoint-stats', (e) => {
    monitor.setReported(parseEndpointStats(e.detail));
  });
  let lastStatsSent = 0;
  const measure = async () => {
    if (!conf.pc) return;
    const report = await conf.qualityReport();
    quality = monitor.update(report, (id) => {
      const p = people.find((x) => x.id === id);
      return Boolean(p && !p.videoMuted);
    });
    paintQuality();
    if (report.at - lastStatsSent >= ENDPOINT_STATS_EVERY_MS && quality.local.level !== 'unknown') {
      const l = quality.local;
      if (conf.sendEndpointStats({
        bitrate: { upload: l.uploadKbps ?? 0, download: l.downloadKbps ?? 0 },
        packetLoss: { upload: l.uploadLossPct ?? 0 },
        connectionQuality: connectionScore(l.level),
        jvbRTT: l.rttMs ?? undefined,
      })) lastStatsSent = report.at;
    }
  };
  const timer = setInterval(() => measure().catch((e) => console.warn('quality:', e.message)), QUALITY_EVERY_MS);
  conf.addEventListener('ended', () => {
    clearInterval(timer);
    closePopover();
    document.removeEventListener('keydown', onKey);
    document.body.classList.remove('chat-open');
  });

  // ---- keyboard shortcuts (as Jitsi Meet: m, v, h, c)
  const onKey = (e) => {
    if (e.key === 'Escape') {
      closePopover();
      if (!reactMenu.hidden) reactMenu.hidden = true;
      return;
    }
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey || document.querySelector('.backdrop')) return;
    const click = { m: 'toggle-audio', v: 'toggle-video', h: 'raise-hand', c: 'toggle-chat' }[e.key.toLowerCase()];
    if (click) {
      e.preventDefault();
      document.getElementById(click)?.click();
    }
  };
  document.addEventListener('keydown', onKey);
  paint(conf.participantList());

  const api = {
    sendChat: (text, to = null) => {
      try {
        conf.sendChat(text, to);
        return null;
      } catch (x) {
        if (x instanceof ChatError) return x.message;
        throw x;
      }
    },
    /** Types into the chat box and presses Enter, as a person would; returns the error line. */
    typeChat: (text, to = '') => {
      if (!chatOpen()) toggleChat(true);
      toSel.value = to;
      toSel.dispatchEvent(new Event('change'));
      input.value = text;
      input.dispatchEvent(new Event('input'));
      input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
      return chatErr.textContent;
    },
    chat: () => ({
      open: chatOpen(), unread: log.unread,
      messages: log.messages.map((m) => ({ from: m.from, name: m.name, text: m.text, private: m.private, mine: Boolean(m.mine), to: m.to ?? null })),
      // What the panel shows: each message's text as rendered, its links, and whether any element but <a> got in.
      rendered: [...messages.children].map((li) => ({
        text: li.querySelector('.chat-text').textContent,
        links: [...li.querySelectorAll('.chat-text a')].map((a) => a.getAttribute('href')),
        elements: [...li.querySelector('.chat-text').querySelectorAll('*')].map((x) => x.tagName.toLowerCase()),
      })),
      badge: chatBadge.hidden ? null : chatBadge.textContent,
      error: chatErr.textContent,
    }),
    hands: () => ({ mine: conf.raisedHand, queue: handQueue(people), list: [...handList.children].map((li) => li.querySelector('.hand-name').textContent) }),
    /** Clicks the Lower button of `id`'s raised hand (a moderator's), false when there is none. */
    lowerHandOf: (id) => {
      const b = handList.querySelector(`.lower-hand[data-id='${CSS.escape(id)}']`);
      b?.click();
      return Boolean(b);
    },
    /** Sends a lower-hand request whatever our role (to show the others refuse it). */
    forceLowerHand: (id) => conf.channel?.send({ colibriClass: 'EndpointMessage', to: id, msgPayload: { name: 'lower-hand-message' } }) ?? false,
    quality: () => structuredClone(quality),
    popover: () => (popover.hidden ? null : { for: popover.dataset.for, text: popover.textContent }),
    openQuality: (id) => togglePopover(id),
    screen: () => (conf.screen
      ? { mid: conf.screen.mid, source: conf.screen.source, maxHeight: conf.screen.maxHeight, track: conf.screen.track.getSettings() }
      : null),
    shareScreen: () => conf.startScreenShare(),
    stopScreen: () => conf.stopScreenShare(),
    endScreenTrack: () => { conf.screen?.track.stop(); conf.screen?.track.dispatchEvent(new Event('ended')); },
    react,
    devices: () => listDevices(),
    /** Camera in use: its label, device id and size. */
    camera: () => {
      const t = conf.localStream?.getVideoTracks()[0];
      return t ? { label: t.label, deviceId: t.getSettings().deviceId, width: t.getSettings().width, height: t.getSettings().height, id: t.id } : null;
    },
    switchCamera: async (deviceId, width = null) => {
      const track = width
        ? (await navigator.mediaDevices.getUserMedia({ video: { deviceId: deviceId ? { exact: deviceId } : undefined, width: { exact: width } } })).getVideoTracks()[0]
        : await openTrack('video', deviceId);
      await conf.replaceLocalTrack('video', track);
      return track.getSettings();
    },
    openSettings: () => settingsBtn.click(),
    key: (k) => document.dispatchEvent(new KeyboardEvent('keydown', { key: k, bubbles: true })),
  };
  return api;
}
