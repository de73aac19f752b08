// The page: landing (/), pre-join (/<room>), the call, and the screens around it. Plain DOM, no framework.

import { AuthFailed, AuthRequired, Conference, LobbyRefused, LobbyRequired, PasswordRequired, tokenClaims } from './conference.js';
import { h } from './dom.js';
import { icons } from './icons.js';
import { SCREEN_STAGE_HEIGHT, STAGE_HEIGHT, followScreens, gridColumns, gridPage, receiverConstraints, stageParticipant, tilesPerPage } from './layout.js';
import { installCallExtras, openSettings } from './call-extras.js';
import { installE2eeUi } from './e2ee-ui.js';
import { loadPrefs, mediaConstraints } from './devices.js';

const ROOM_RE = /^[a-z0-9_-]{1,64}$/;
const NAME_KEY = 'sluice.displayName';
const ADJECTIVES = ['amber', 'brisk', 'calm', 'clear', 'quiet', 'bright', 'swift', 'gentle', 'lucky', 'silver', 'bold', 'mellow'];
const NOUNS = ['river', 'harbor', 'meadow', 'canyon', 'lagoon', 'summit', 'forest', 'delta', 'island', 'valley', 'orchard', 'comet'];

const app = document.getElementById('app');
let conference = null;
let callUi = null; // renderCall's handle: the layout, for the test API
let testTone = null; // window.sluice.tone's track
let view = 'loading';
let localStream = null;
let mediaError = null;
let configPromise = null;

// ------------------------------------------------------------------------------------------- helpers

function randomRoom() {
  const pick = (a) => a[Math.floor(Math.random() * a.length)];
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${Math.floor(10 + Math.random() * 90)}`;
}

function normalizeRoom(s) {
  return s.trim().toLowerCase().replace(/\s+/g, '-').replace(/[^a-z0-9_-]/g, '');
}

function initials(name) {
  const parts = (name || '?').trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

// A stable colour per participant id, for avatars.
function hue(id) {
  let x = 0;
  for (const c of id) x = (x * 31 + c.charCodeAt(0)) % 360;
  return x;
}

function avatar(id, name, big = false) {
  return h(`div.avatar${big ? '.big' : ''}`, { style: `--hue:${hue(id)}` }, initials(name));
}

function brand() {
  return h('a.brand', { href: '/', html: `${icons.logo}<span>Sluice</span>` });
}

function toast(text, kind = 'info') {
  let box = document.querySelector('.toasts');
  if (!box) {
    box = h('div.toasts');
    document.body.append(box);
  }
  const t = h(`div.toast.${kind}`, {}, text);
  box.append(t);
  setTimeout(() => t.classList.add('gone'), 3500);
  setTimeout(() => t.remove(), 4000);
}

function loadConfig() {
  configPromise ??= fetch('/config.json', { cache: 'no-store' }).then((r) => {
    if (!r.ok) throw new Error(`/config.json: HTTP ${r.status}`);
    return r.json();
  });
  return configPromise;
}

// Jitsi's token flow: /<room>?jwt=<token>. The token's user name (context.user.name) is the name others see.
function urlToken() {
  return new URLSearchParams(location.search).get('jwt') || null;
}

function tokenName(token) {
  const name = token ? tokenClaims(token)?.context?.user?.name : null;
  return typeof name === 'string' && name.trim() ? name.trim().slice(0, 48) : null;
}

function setView(name, node) {
  view = name;
  document.body.dataset.view = name;
  app.replaceChildren(node);
}

// --------------------------------------------------------------------------------------------- landing

function renderLanding(error) {
  const suggestion = randomRoom();
  const input = h('input#room-name', { type: 'text', value: suggestion, autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Room name', maxlength: '64' });
  const hint = h('p.hint', {}, error || 'Letters, digits, dashes and underscores.');
  if (error) hint.classList.add('error');
  const go = (e) => {
    e.preventDefault();
    const room = normalizeRoom(input.value);
    if (!ROOM_RE.test(room)) {
      hint.textContent = 'Please enter a room name: letters, digits, dashes or underscores.';
      hint.classList.add('error');
      return;
    }
    location.assign(`/${room}`);
  };
  const form = h('form.join-form', { onsubmit: go },
    h('div.field-row', {}, h('span.prefix', {}, `${location.host}/`), input),
    h('button.btn.primary#join-room', { type: 'submit' }, 'Join'));
  const shuffle = h('button.link', { type: 'button', onclick: () => { input.value = randomRoom(); input.focus(); } }, 'Suggest another name');
  setView('landing', h('div.page.landing', {},
    h('header.topbar', {}, brand()),
    h('main.hero', {},
      h('h1', {}, 'Video meetings on your own server'),
      h('p.lead', {}, 'Pick a room name and share the link. Everyone who opens it joins the same meeting — no accounts, no installs.'),
      h('div.card.landing-card', {}, h('label.label', { for: 'room-name' }, 'Room name'), form, h('div.hint-row', {}, hint, shuffle)),
      h('ul.features', {},
        h('li', { html: `${icons.cam}<span>HD video and audio in the browser</span>` }),
        h('li', { html: `${icons.lock}<span>Password-protect any room</span>` }),
        h('li', { html: `${icons.people}<span>Self-hosted, Jitsi-compatible</span>` }))),
    h('footer.foot', {}, 'Sluice')));
  input.select();
}

// -------------------------------------------------------------------------------------------- pre-join

let mediaPromise = null;

function acquireMedia() {
  mediaPromise ??= openMedia();
  return mediaPromise;
}

async function openMedia() {
  try {
    // The devices chosen in settings last time (devices.js), else the defaults.
    localStream = await navigator.mediaDevices.getUserMedia(mediaConstraints(loadPrefs()));
  } catch (e) {
    mediaError = e;
    try {
      localStream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e2) {
      localStream = null;
    }
  }
  return localStream;
}

function renderPrejoin(room) {
  const saved = tokenName(urlToken()) || localStorage.getItem(NAME_KEY) || '';
  let audioOn = true;
  let videoOn = true;
  const video = h('video.mirror', { autoplay: true, muted: true, playsInline: true });
  const av = h('div.preview-avatar', {}, avatar('me', saved || 'You', true));
  const status = h('p.media-status', {}, 'Starting camera and microphone…');
  const nameInput = h('input#display-name', { type: 'text', value: saved, placeholder: 'Your name', autocomplete: 'name', maxlength: '48', 'aria-label': 'Your name' });
  const micBtn = h('button.round#pre-mic', { type: 'button', title: 'Microphone' });
  const camBtn = h('button.round#pre-cam', { type: 'button', title: 'Camera' });
  const setBtn = h('button.round#pre-settings', { type: 'button', title: 'Choose camera, microphone and speaker', 'aria-label': 'Device settings', html: icons.settings });
  const joinBtn = h('button.btn.primary.wide#join-button', { type: 'submit' }, 'Join meeting');
  const preview = h('div.preview', {}, video, av, h('div.preview-controls', {}, micBtn, camBtn, setBtn));
  setBtn.addEventListener('click', async () => {
    await acquireMedia();
    await openSettings({
      stream: localStream,
      replaceTrack: async (kind, track) => {
        localStream ??= new MediaStream();
        for (const old of localStream.getTracks().filter((t) => t.kind === kind)) { localStream.removeTrack(old); old.stop(); }
        localStream.addTrack(track);
        video.srcObject = localStream;
        paint();
      },
    });
  });

  const paint = () => {
    const hasA = Boolean(localStream?.getAudioTracks().length);
    const hasV = Boolean(localStream?.getVideoTracks().length);
    micBtn.innerHTML = audioOn && hasA ? icons.mic : icons.micOff;
    camBtn.innerHTML = videoOn && hasV ? icons.cam : icons.camOff;
    micBtn.classList.toggle('off', !(audioOn && hasA));
    camBtn.classList.toggle('off', !(videoOn && hasV));
    micBtn.disabled = !hasA;
    camBtn.disabled = !hasV;
    preview.classList.toggle('video-off', !(videoOn && hasV));
    for (const t of localStream?.getAudioTracks() ?? []) t.enabled = audioOn;
    for (const t of localStream?.getVideoTracks() ?? []) t.enabled = videoOn;
    av.replaceChildren(avatar('me', nameInput.value || 'You', true));
  };
  micBtn.addEventListener('click', () => { audioOn = !audioOn; paint(); });
  camBtn.addEventListener('click', () => { videoOn = !videoOn; paint(); });
  nameInput.addEventListener('input', paint);

  const submit = async (e) => {
    e.preventDefault();
    const name = nameInput.value.trim();
    if (!name) {
      nameInput.classList.add('invalid');
      nameInput.focus();
      return;
    }
    localStorage.setItem(NAME_KEY, name);
    joinBtn.disabled = true;
    joinBtn.textContent = 'Joining…';
    await acquireMedia(); // a quick click must not join before the camera and microphone are ready
    startCall(room, name, !audioOn, !videoOn);
  };

  setView('prejoin', h('div.page.prejoin', {},
    h('header.topbar', {}, brand(), h('span.room-chip', {}, room)),
    h('main.prejoin-main', {},
      h('div.card.prejoin-card', {},
        preview,
        h('form.prejoin-form', { onsubmit: submit },
          h('h2', {}, 'Ready to join?'),
          h('p.sub', {}, 'Room ', h('strong', {}, room)),
          h('label.label', { for: 'display-name' }, 'Display name'),
          nameInput,
          status,
          joinBtn)))));
  paint();
  if (tokenName(urlToken())) nameInput.readOnly = true; // the token's name is what others see
  if (!saved) nameInput.focus();

  acquireMedia().then((stream) => {
    if (stream && stream.getVideoTracks().length) video.srcObject = stream;
    if (!stream) status.textContent = 'No camera or microphone: you can still join and watch.';
    else if (!stream.getVideoTracks().length) status.textContent = 'No camera found; microphone ready.';
    else status.textContent = 'Camera and microphone ready.';
    if (mediaError && stream) console.info('camera unavailable:', mediaError.name);
    paint();
  });
}

// ------------------------------------------------------------------------------------------------ call

function passwordDialog({ title, text, confirm, allowClear = false, error = null }) {
  return new Promise((resolve) => {
    const input = h('input#password-input', { type: 'password', placeholder: 'Password', autocomplete: 'off', 'aria-label': 'Password' });
    const err = h('p.hint.error', {}, error || '');
    const close = (v) => {
      back.remove();
      resolve(v);
    };
    const form = h('form.dialog', {
      onsubmit: (e) => {
        e.preventDefault();
        if (!input.value) {
          err.textContent = 'Please enter a password.';
          return;
        }
        close(input.value);
      },
    },
    h('div.dialog-icon', { html: icons.lock }),
    h('h3', {}, title),
    h('p.sub', {}, text),
    input,
    err,
    h('div.dialog-actions', {},
      allowClear ? h('button.btn.ghost#password-clear', { type: 'button', onclick: () => close('') }, 'Remove password') : null,
      h('span.spacer'),
      h('button.btn.ghost#password-cancel', { type: 'button', onclick: () => close(null) }, 'Cancel'),
      h('button.btn.primary#password-submit', { type: 'submit' }, confirm)));
    const back = h('div.backdrop', { onclick: (e) => { if (e.target === back) close(null); } }, form);
    document.body.append(back);
    input.focus();
  });
}

/** The login prompt of a secure domain: resolves {username, password}, or null when cancelled. */
function loginDialog({ error = null } = {}) {
  return new Promise((resolve) => {
    const user = h('input#login-username', { type: 'text', placeholder: 'User name', autocomplete: 'username', 'aria-label': 'User name', autocapitalize: 'none', spellcheck: 'false' });
    const pass = h('input#login-password', { type: 'password', placeholder: 'Password', autocomplete: 'current-password', 'aria-label': 'Password' });
    const err = h('p.hint.error#login-error', {}, error || '');
    const close = (v) => {
      back.remove();
      resolve(v);
    };
    const form = h('form.dialog#login-dialog', {
      onsubmit: (e) => {
        e.preventDefault();
        const username = user.value.trim().toLowerCase();
        if (!username || !pass.value) {
          err.textContent = 'Please enter your user name and password.';
          return;
        }
        close({ username, password: pass.value });
      },
    },
    h('div.dialog-icon', { html: icons.lock }),
    h('h3', {}, 'Log in to start this meeting'),
    h('p.sub', {}, 'This meeting has not started yet. Log in to start it, or wait for the host.'),
    user,
    pass,
    err,
    h('div.dialog-actions', {},
      h('span.spacer'),
      h('button.btn.ghost#login-cancel', { type: 'button', onclick: () => close(null) }, 'Cancel'),
      h('button.btn.primary#login-submit', { type: 'submit' }, 'Log in')));
    const back = h('div.backdrop', {}, form);
    document.body.append(back);
    user.focus();
  });
}

/** The lobby's waiting screen: our name, and that a moderator has been asked to let us in. */
function renderLobby(room, name) {
  const cancel = h('button.btn.ghost#lobby-cancel', { type: 'button', onclick: async () => {
    await conference?.leave();
    location.assign('/');
  } }, 'Cancel');
  setView('lobby', h('div.page.lobby', {},
    h('header.topbar', {}, brand(), h('span.room-chip', {}, room)),
    h('main.hero', {},
      h('div.card.lobby-card#lobby-waiting', {},
        avatar('me', name, true),
        h('h2', {}, 'Asking to join…'),
        h('p.sub', {}, h('strong#lobby-name', {}, name), ', the meeting has a lobby: a moderator will let you in.'),
        h('div.spinner'),
        h('div.dialog-actions', {}, h('span.spacer'), cancel)))));
}

async function startCall(room, name, audioMuted, videoMuted) {
  let config;
  try {
    config = await loadConfig();
  } catch (e) {
    renderEnded(room, `Cannot load the server configuration (${e.message}).`, true);
    return;
  }
  conference = new Conference({ config, room, displayName: name, localStream, audioMuted, videoMuted, token: urlToken() });
  const ui = renderCall(room, conference);
  callUi = ui;
  let password = null;
  let wrong = false;
  let login = null; // {error} while the login prompt is to be shown (a secure domain)
  let lobby = null; // the LobbyRequired of our join: knock and wait
  for (;;) {
    try {
      if (lobby) {
        renderLobby(room, conference.displayName);
        const knock = lobby;
        lobby = null;
        await conference.knock(knock);
        ui.show();
      } else if (login) {
        window.sluice._prompt = 'login';
        const creds = await loginDialog(login);
        window.sluice._prompt = null;
        if (creds === null) {
          await conference.leave();
          renderEnded(room, 'This meeting has not started yet: the host must log in to start it.', true);
          return;
        }
        try {
          await conference.login(creds.username, creds.password);
        } catch (e) {
          if (!(e instanceof AuthFailed)) throw e;
          login = { error: 'Wrong user name or password, please try again.' };
          continue;
        }
        login = null;
      } else {
        await conference.join(password);
      }
      break;
    } catch (e) {
      if (e instanceof LobbyRequired) {
        lobby = e;
        continue;
      }
      if (e instanceof LobbyRefused) {
        await conference.leave();
        renderEnded(room, e.reason, false, 'You were not let in');
        return;
      }
      if (e instanceof AuthRequired && config.hosts.auth) {
        login = { error: null }; // a guest on a secure domain: offer the login prompt
        continue;
      }
      if (e instanceof AuthFailed && config.hosts.auth && !conference.token && !conference.credentials) {
        login = { error: null }; // no guests at all (anonymous logins off): log in to go on
        continue;
      }
      if (e instanceof PasswordRequired) {
        window.sluice._prompt = 'password';
        password = await passwordDialog({
          title: 'This meeting is protected',
          text: 'Enter the room password to join.',
          confirm: 'Join',
          error: wrong ? 'Wrong password, please try again.' : null,
        });
        window.sluice._prompt = null;
        wrong = true;
        if (password === null) {
          await conference.leave();
          location.assign('/');
          return;
        }
        continue;
      }
      console.error('join failed:', e);
      await conference.leave().catch(() => {});
      renderEnded(room, `Could not join: ${e.message}`, true);
      return;
    }
  }
  ui.joined();
}

function renderCall(room, conf) {
  const grid = h('div.grid#grid');
  const list = h('ul.people#people');
  // Moderators: everyone's microphone or camera off, from the participant list.
  const panelMod = h('div.panel-mod#panel-moderation', { hidden: true },
    h('button.btn.ghost.small#panel-mute-all', { type: 'button', onclick: () => act('mute everyone', () => conf.muteEveryone('audio')) }, 'Mute all'),
    h('button.btn.ghost.small#panel-stop-all-video', { type: 'button', onclick: () => act('stop everyone\'s video', () => conf.muteEveryone('video')) }, 'Stop all video'));
  const panel = h('aside.panel#panel', {}, h('div.panel-head', {}, h('h3', {}, 'Participants'), h('span.count#people-count')), panelMod, list);
  const xmppDot = h('span.dot');
  const iceDot = h('span.dot');
  const conn = h('div.conn#conn', { title: 'Connection' },
    h('span.conn-item', {}, xmppDot, h('span.conn-label', {}, 'Server'), h('span.conn-value#xmpp-state')),
    h('span.conn-item', {}, iceDot, h('span.conn-label', {}, 'Media'), h('span.conn-value#ice-state')));
  const lockBadge = h('span.lock-badge#lock-badge', { hidden: true, html: `${icons.lock}<span>Locked</span>` });
  const micBtn = h('button.tool#toggle-audio', { type: 'button' });
  const camBtn = h('button.tool#toggle-video', { type: 'button' });
  const peopleBtn = h('button.tool#toggle-people', { type: 'button', title: 'Participants', html: `${icons.people}<span class="tool-label">People</span>` });
  const lockBtn = h('button.tool#room-password', { type: 'button', title: 'Room password', hidden: true });
  const linkBtn = h('button.tool#copy-link', { type: 'button', title: 'Copy meeting link', html: `${icons.link}<span class="tool-label">Invite</span>` });
  const leaveBtn = h('button.tool.danger#leave', { type: 'button', title: 'Leave', html: `${icons.leave}<span class="tool-label">Leave</span>` });
  const layoutBtn = h('button.tool#toggle-layout', { type: 'button' });
  // Moderators: the lobby, mute everyone, end the meeting; and who knocks (admit / reject).
  const lobbyBtn = h('button.tool#toggle-lobby', { type: 'button', title: 'Lobby: newcomers wait until a moderator lets them in', hidden: true });
  const muteAllBtn = h('button.tool#mute-all', { type: 'button', title: 'Mute everyone', hidden: true, html: `${icons.micOff}<span class="tool-label">Mute all</span>` });
  const avBtn = h('button.tool#toggle-av-moderation', { type: 'button', title: 'Moderated meeting: only those a moderator allows may unmute', hidden: true });
  const endBtn = h('button.tool.danger#end-meeting', { type: 'button', title: 'End the meeting for everyone', hidden: true, html: `${icons.close}<span class="tool-label">End</span>` });
  const knocks = h('div.card.knocks#knocks', { hidden: true });
  const modBanner = h('div.moderator-muted#moderator-muted', { hidden: true });
  const tiles = new Map(); // id → {el, video, audios: Map}
  // Grid or stage; who is pinned (a click on a tile); who the bridge says speaks (bridge channel).
  // auto: the stage was chosen for a screen share; chosen: the person picked a layout during one.
  // The grid's page (of pages, perPage tiles each: what fits); whether our own tile and the stage's
  // filmstrip show.
  const layout = { mode: 'grid', pinned: null, dominant: null, stage: null, auto: false, chosen: false,
    page: 0, pages: 1, perPage: 9, selfView: true, filmstrip: true };
  let people = [];
  // Which tiles the viewport shows (another page, a hidden filmstrip, scrolled away: not): what is not shown
  // is asked of the bridge at 0.
  const inView = new Map();
  const observer = new IntersectionObserver((entries) => {
    let changed = false;
    for (const e of entries) {
      const id = e.target.dataset.id;
      if (inView.get(id) !== e.isIntersecting) changed = true;
      inView.set(id, e.isIntersecting);
    }
    if (changed) applyLayout();
  });
  const pageLabel = h('span.page-label#page-label');
  const prevBtn = h('button.icon-btn#page-prev', { type: 'button', title: 'Previous page', 'aria-label': 'Previous page' }, '‹');
  const nextBtn = h('button.icon-btn#page-next', { type: 'button', title: 'Next page', 'aria-label': 'Next page' }, '›');
  const pager = h('div.pager#pager', { hidden: true, role: 'navigation', 'aria-label': 'Grid pages' }, prevBtn, pageLabel, nextBtn);
  const selfBtn = h('button.chip#toggle-self-view', { type: 'button', 'aria-pressed': 'false' });
  const stripBtn = h('button.chip#toggle-filmstrip', { type: 'button', 'aria-pressed': 'false' });
  const viewBar = h('div.view-bar#view-bar', { role: 'toolbar', 'aria-label': 'View' }, selfBtn, stripBtn, h('span.spacer'), pager);

  const applyLayout = () => {
    const stage = stageParticipant(layout, people);
    layout.stage = stage;
    grid.classList.toggle('stage-view', layout.mode === 'stage');
    // Our own camera's tile only while self view is on (our screen share stays).
    const ordered = people.filter((p) => layout.selfView || !p.local || p.screen).map((p) => p.id);
    if (grid.clientHeight > 0) layout.perPage = tilesPerPage(grid.clientWidth, grid.clientHeight);
    let shown;
    if (layout.mode === 'grid') {
      const g = gridPage(ordered, layout.perPage, layout.page);
      Object.assign(layout, { page: g.page, pages: g.pages });
      shown = new Set(g.visible);
    } else {
      shown = new Set(ordered.filter((id) => id === stage || layout.filmstrip));
      if (stage) shown.add(stage);
    }
    const cols = gridColumns(shown.size, grid.clientWidth);
    grid.style.setProperty('--cols', String(cols));
    grid.style.setProperty('--rows', String(Math.max(1, Math.ceil(shown.size / cols))));
    grid.style.setProperty('--strip', String(Math.max(1, shown.size - 1)));
    grid.dataset.count = String(shown.size);
    grid.classList.toggle('no-strip', layout.mode === 'stage' && shown.size <= 1);
    for (const [id, t] of tiles) {
      t.el.classList.toggle('off', !shown.has(id));
      t.el.classList.toggle('on-stage', id === stage);
      t.el.classList.toggle('pinned', id === layout.pinned);
      t.el.classList.toggle('dominant', id === layout.dominant);
      // A remote video the bridge does not forward (last-n) shows the avatar, not its last frame.
      const src = conf.videoSourceOf(id);
      if (src && conf.forwardedSources) t.el.dataset.forwarded = String(conf.forwardedSources.includes(src));
      else delete t.el.dataset.forwarded;
    }
    const stageIsRemote = stage !== null && !people.find((p) => p.id === stage)?.local;
    const stageScreen = Boolean(people.find((p) => p.id === stage)?.screen);
    const hidden = people.filter((p) => !p.local && (!shown.has(p.id) || inView.get(p.id) === false))
      .map((p) => conf.videoSourceOf(p.id)).filter(Boolean);
    conf.setReceiverConstraints(receiverConstraints(stageIsRemote ? conf.videoSourceOf(stage) : null,
      stageScreen ? SCREEN_STAGE_HEIGHT : STAGE_HEIGHT, hidden));
    pager.hidden = layout.mode !== 'grid' || layout.pages <= 1;
    pageLabel.textContent = `Page ${layout.page + 1} of ${layout.pages}`;
    prevBtn.disabled = layout.page === 0;
    nextBtn.disabled = layout.page >= layout.pages - 1;
    selfBtn.textContent = layout.selfView ? 'Hide self view' : 'Show self view';
    selfBtn.setAttribute('aria-pressed', String(!layout.selfView));
    stripBtn.hidden = layout.mode !== 'stage';
    stripBtn.textContent = layout.filmstrip ? 'Hide filmstrip' : 'Show filmstrip';
    stripBtn.setAttribute('aria-pressed', String(!layout.filmstrip));
    layoutBtn.innerHTML = (layout.mode === 'stage' ? icons.grid : icons.stage) +
      `<span class="tool-label">${layout.mode === 'stage' ? 'Grid' : 'Stage'}</span>`;
    layoutBtn.title = layout.mode === 'stage' ? 'Show everyone in a grid' : 'Show one participant large';
  };
  // A click on a tile pins it on stage; a click on the pinned tile unpins it (the speaker takes the stage).
  const togglePin = (id) => {
    layout.pinned = layout.pinned === id ? null : id;
    if (layout.pinned) layout.mode = 'stage';
    applyLayout();
  };
  prevBtn.addEventListener('click', () => { layout.page -= 1; applyLayout(); });
  nextBtn.addEventListener('click', () => { layout.page += 1; applyLayout(); });
  selfBtn.addEventListener('click', () => { layout.selfView = !layout.selfView; applyLayout(); });
  stripBtn.addEventListener('click', () => { layout.filmstrip = !layout.filmstrip; applyLayout(); });
  // The grid's size decides how many tiles a page holds.
  new ResizeObserver(() => {
    if (tilesPerPage(grid.clientWidth, grid.clientHeight) !== layout.perPage) applyLayout();
  }).observe(grid);
  layoutBtn.addEventListener('click', () => {
    layout.mode = layout.mode === 'stage' ? 'grid' : 'stage';
    if (layout.mode === 'grid') layout.pinned = null;
    layout.auto = false;
    layout.chosen = people.some((p) => p.screen && !p.local);
    applyLayout();
  });

  // In a moderated meeting a moderator must allow us first (the focus would keep us muted anyway).
  micBtn.addEventListener('click', () => {
    if (conf.audioMuted && conf.mustAsk('audio')) toast('This meeting is moderated: a moderator must allow you to unmute.');
    else conf.setAudioMuted(!conf.audioMuted);
  });
  camBtn.addEventListener('click', () => {
    if (conf.videoMuted && conf.mustAsk('video')) toast('This meeting is moderated: a moderator must allow you to start your camera.');
    else conf.setVideoMuted(!conf.videoMuted);
  });
  peopleBtn.addEventListener('click', () => document.body.classList.toggle('panel-open'));
  linkBtn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(location.href);
      toast('Meeting link copied.');
    } catch {
      toast(location.href);
    }
  });
  lockBtn.addEventListener('click', async () => {
    const pw = await passwordDialog({
      title: conf.locked ? 'Change the room password' : 'Protect this room',
      text: 'People joining will need this password. Those already here stay.',
      confirm: 'Set password',
      allowClear: conf.locked,
    });
    if (pw === null) return;
    try {
      await conf.setPassword(pw);
      toast(pw ? 'Room password set.' : 'Room password removed.', 'ok');
    } catch (e) {
      toast(`Could not change the password: ${e.message}`, 'error');
    }
  });
  leaveBtn.addEventListener('click', () => conf.leave());
  const act = async (what, fn) => {
    try {
      await fn();
    } catch (e) {
      toast(`Could not ${what}: ${e.message}`, 'error');
    }
  };
  lobbyBtn.addEventListener('click', () => act('change the lobby', async () => {
    await conf.setLobby(!conf.lobby.jid);
    toast(conf.lobby.jid ? 'Lobby on: newcomers wait to be let in.' : 'Lobby off.', 'ok');
  }));
  muteAllBtn.addEventListener('click', () => act('mute everyone', async () => {
    const refused = await conf.muteEveryone('audio');
    toast(refused ? `${refused} could not be muted.` : 'Everyone else is muted.', refused ? 'error' : 'ok');
  }));
  endBtn.addEventListener('click', () => act('end the meeting', () => conf.endMeeting()));
  avBtn.addEventListener('click', () => act('moderate the meeting', async () => {
    const on = !conf.avModeration.audio;
    await conf.setAvModeration(on);
    toast(on ? 'Moderated: others stay muted until you allow them.' : 'Everyone may unmute again.', 'ok');
  }));

  // The moderator menu of one participant, on its tile and in the participant list.
  const closeMenu = () => document.getElementById('person-menu')?.remove();
  const openMenu = (p, anchor) => {
    closeMenu();
    const item = (id, label, fn) => h(`button.menu-item#${id}`, { type: 'button', onclick: (e) => {
      e.stopPropagation();
      closeMenu();
      act(label.toLowerCase(), fn);
    } }, label);
    const menu = h('div.menu#person-menu', { 'data-id': p.id },
      h('div.menu-title', {}, p.name),
      item('menu-mute', 'Mute', () => conf.muteParticipant(p.id, 'audio')),
      item('menu-stop-video', 'Stop video', () => conf.muteParticipant(p.id, 'video')),
      conf.avModeration.audio ? item('menu-allow', 'Allow to unmute', () => conf.allowUnmute(p.id)) : null,
      p.affiliation === 'owner' ? null : item('menu-grant', 'Make moderator', () => conf.grantModerator(p.id)),
      item('menu-kick', 'Remove from meeting', () => conf.kick(p.id)));
    const r = anchor.getBoundingClientRect();
    menu.style.top = `${Math.min(r.bottom + 4, window.innerHeight - 200)}px`;
    menu.style.left = `${Math.max(8, Math.min(r.left, window.innerWidth - 220))}px`;
    document.body.append(menu);
  };
  document.addEventListener('click', (e) => { if (!e.target.closest?.('.menu, .menu-btn')) closeMenu(); });
  const menuButton = (p) => h('button.menu-btn', { type: 'button', title: `Moderate ${p.name}`, 'data-id': p.id, onclick: (e) => {
    e.stopPropagation();
    openMenu(p, e.currentTarget);
  } }, '⋮');

  const paintLobby = (l) => {
    lobbyBtn.innerHTML = `${icons.people}<span class="tool-label">${l.on ? 'Lobby on' : 'Lobby'}</span>`;
    lobbyBtn.classList.toggle('active', l.on);
    knocks.hidden = !l.knockers.length;
    knocks.replaceChildren(h('div.knocks-head', {}, `Waiting in the lobby (${l.knockers.length})`),
      ...l.knockers.map((k) => h('div.knock', { 'data-nick': k.nick },
        avatar(k.nick, k.name),
        h('span.knock-name', {}, k.name),
        h('button.btn.primary.small.admit', { type: 'button', onclick: () => act('admit', () => conf.admit(k.nick)) }, 'Admit'),
        h('button.btn.ghost.small.reject', { type: 'button', onclick: () => act('reject', () => conf.reject(k.nick)) }, 'Reject'))));
  };

  const paintState = (s) => {
    const good = (v) => ['connected', 'completed'].includes(v);
    const bad = (v) => ['failed', 'disconnected', 'closed'].includes(v) || /^unavailable/.test(v);
    const xmppText = s.joined ? 'in room' : s.xmpp === 'connected' ? (s.focus === 'ready' || s.focus === 'in room' ? 'joining' : `focus ${s.focus}`) : s.xmpp;
    conn.querySelector('#xmpp-state').textContent = xmppText;
    xmppDot.className = `dot ${s.joined ? 'ok' : bad(s.xmpp) ? 'bad' : 'wait'}`;
    const media = s.jingle === 'none' ? (s.joined ? 'waiting for others' : '—') : s.jingle === 'restarting' ? 'reconnecting' : s.ice;
    conn.querySelector('#ice-state').textContent = media;
    iceDot.className = `dot ${good(s.ice) ? 'ok' : bad(s.ice) && s.jingle !== 'none' ? 'bad' : s.jingle === 'none' ? 'idle' : 'wait'}`;
  };

  const tileFor = (p) => {
    let t = tiles.get(p.id);
    if (!t) {
      const video = h('video', { autoplay: true, playsInline: true, muted: true });
      if (p.local && !p.screen) video.classList.add('mirror');
      const el = h('div.tile', { 'data-id': p.id },
        video,
        h('div.tile-avatar'),
        h('div.tile-label', {}, h('span.tile-mic'), h('span.tile-name')),
        h('div.tile-badges'),
        h('div.tile-menu'));
      t = { el, video, audios: new Map(), stream: new MediaStream() };
      video.srcObject = t.stream;
      el.addEventListener('click', () => togglePin(p.id));
      el.title = 'Click to pin on stage';
      tiles.set(p.id, t);
      grid.append(el);
      observer.observe(el);
    }
    return t;
  };

  const paintParticipants = (next) => {
    people = next;
    const seen = new Set();
    for (const p of people) {
      seen.add(p.id);
      const t = tileFor(p);
      const videoTracks = p.tracks.filter((x) => x.kind === 'video' && x.readyState === 'live');
      const audioTracks = p.local ? [] : p.tracks.filter((x) => x.kind === 'audio');
      const current = t.stream.getVideoTracks();
      if (current[0] !== videoTracks[0]) {
        for (const x of current) t.stream.removeTrack(x);
        if (videoTracks[0]) t.stream.addTrack(videoTracks[0]);
        t.video.play().catch(() => {});
      }
      for (const a of audioTracks) {
        if (!t.audios.has(a.id)) {
          const el = h('audio', { autoplay: true });
          el.srcObject = new MediaStream([a]);
          t.audios.set(a.id, el);
          t.el.append(el);
        }
      }
      for (const [id, el] of t.audios) if (!audioTracks.some((a) => a.id === id)) { el.remove(); t.audios.delete(id); }
      const showVideo = Boolean(videoTracks[0]) && !p.videoMuted;
      t.el.classList.toggle('no-video', !showVideo);
      t.el.classList.toggle('local', p.local);
      t.el.dataset.audioMuted = String(p.audioMuted);
      t.el.dataset.videoMuted = String(p.videoMuted);
      t.el.querySelector('.tile-name').textContent = p.local ? `${p.name} (you)` : p.name;
      t.el.querySelector('.tile-mic').innerHTML = p.audioMuted ? icons.micOff : '';
      t.el.querySelector('.tile-mic').hidden = !p.audioMuted;
      const avatarBox = t.el.querySelector('.tile-avatar');
      if (avatarBox.dataset.name !== p.name) {
        avatarBox.dataset.name = p.name;
        avatarBox.replaceChildren(avatar(p.id, p.name, true));
      }
      t.el.querySelector('.tile-badges').innerHTML = p.videoMuted ? `<span class="badge" title="Camera off">${icons.camOff}</span>` : '';
      const moderate = conf.isModerator && !p.local;
      const slot = t.el.querySelector('.tile-menu');
      if (moderate !== Boolean(slot.firstChild) || (moderate && slot.firstChild.title !== `Moderate ${p.name}`)) slot.replaceChildren(...(moderate ? [menuButton(p)] : []));
    }
    for (const [id, t] of tiles) {
      if (!seen.has(id)) {
        observer.unobserve(t.el);
        inView.delete(id);
        t.el.remove();
        tiles.delete(id);
      }
    }
    followScreens(layout, people);
    applyLayout();

    list.replaceChildren(...people.filter((p) => !p.screen).map((p) => h('li.person', { 'data-id': p.id },
      avatar(p.id, p.name),
      h('span.person-name', {}, p.name, p.local ? h('span.you', {}, ' (you)') : null),
      p.affiliation === 'owner' ? h('span.role', { title: 'Owner', html: icons.star }) : null,
      h('span.person-icons', { html: (p.audioMuted ? icons.micOff : icons.mic) + (p.videoMuted ? icons.camOff : icons.cam) }),
      conf.isModerator && !p.local && !p.screen ? menuButton(p) : null)));
    panel.querySelector('#people-count').textContent = String(people.filter((p) => !p.screen).length);
    micBtn.innerHTML = (conf.audioMuted ? icons.micOff : icons.mic) + `<span class="tool-label">${conf.audioMuted ? 'Unmute' : 'Mute'}</span>`;
    camBtn.innerHTML = (conf.videoMuted ? icons.camOff : icons.cam) + `<span class="tool-label">${conf.videoMuted ? 'Start video' : 'Stop video'}</span>`;
    micBtn.classList.toggle('off', conf.audioMuted);
    camBtn.classList.toggle('off', conf.videoMuted);
    micBtn.title = `${conf.audioMuted ? 'Unmute microphone' : 'Mute microphone'} (m)`;
    camBtn.title = `${conf.videoMuted ? 'Turn camera on' : 'Turn camera off'} (v)`;
    micBtn.setAttribute('aria-pressed', String(conf.audioMuted));
    camBtn.setAttribute('aria-pressed', String(conf.videoMuted));
    lockBtn.hidden = conf.affiliation !== 'owner';
    lobbyBtn.hidden = conf.affiliation !== 'owner';
    endBtn.hidden = conf.affiliation !== 'owner';
    muteAllBtn.hidden = !conf.isModerator;
    avBtn.hidden = !conf.isModerator;
    panelMod.hidden = !conf.isModerator;
    avBtn.innerHTML = `${icons.star}<span class="tool-label">${conf.avModeration.audio ? 'Moderated' : 'Moderate'}</span>`;
    avBtn.classList.toggle('active', conf.avModeration.audio);
    const by = conf.mutedByModerator;
    const what = [by.audio ? 'microphone' : null, by.video ? 'camera' : null].filter(Boolean).join(' and ');
    const ask = conf.mustAsk('audio') && conf.audioMuted;
    modBanner.hidden = !what && !ask;
    modBanner.textContent = ask ? 'This meeting is moderated: a moderator must allow you to unmute.'
      : what ? `A moderator muted your ${what}.` : '';
    paintLock();
  };

  const paintLock = () => {
    lockBadge.hidden = !conf.locked;
    lockBtn.innerHTML = (conf.locked ? icons.lock : icons.unlock) + `<span class="tool-label">${conf.locked ? 'Locked' : 'Lock'}</span>`;
    lockBtn.classList.toggle('active', conf.locked);
  };

  conf.addEventListener('state', (e) => paintState(e.detail));
  conf.addEventListener('participants', (e) => paintParticipants(e.detail));
  conf.addEventListener('locked', (e) => {
    paintLock();
    if (!e.detail.initial) toast(e.detail.locked ? 'This room is now password-protected.' : 'The room password was removed.');
  });
  conf.addEventListener('notice', (e) => toast(e.detail));
  conf.addEventListener('lobby', (e) => paintLobby(e.detail));
  conf.addEventListener('dominant-speaker', (e) => {
    layout.dominant = e.detail.id;
    applyLayout();
  });
  conf.addEventListener('forwarded-sources', () => applyLayout());
  conf.addEventListener('ended', (e) => {
    closeMenu();
    if (view === 'call') renderEnded(room, e.detail.reason, false, /moderator/.test(e.detail.reason) ? 'The meeting is over for you' : null);
  });

  const lastSep = h('span.sep');
  const toolbar = h('footer.toolbar', { role: 'toolbar', 'aria-label': 'Call controls' }, micBtn, camBtn, h('span.sep'), layoutBtn, peopleBtn, linkBtn, lockBtn, lobbyBtn, muteAllBtn, avBtn,
    lastSep, endBtn, leaveBtn);
  const callBody = h('div.call-body', {}, h('main.stage', { 'aria-label': 'Participants\' video' }, viewBar, grid, modBanner, knocks), panel);
  const topbar = h('header.topbar.call-top', {}, brand(), h('span.room-chip', {}, room), lockBadge, h('span.spacer'), conn);
  const page = h('div.page.call', {},
    topbar,
    callBody,
    toolbar);
  setView('call', page);
  paintState(conf.state);
  paintParticipants(conf.participantList());
  paintLobby(conf.lobbyState());
  // Chat, hands, reactions, screen share, settings, quality, shortcuts (call-extras.js).
  Object.assign(window.sluice, installCallExtras({ conf, toolbar, before: lastSep, body: callBody, toast }));
  Object.assign(window.sluice, installE2eeUi({ conf, toolbar, before: lastSep, topbar }));
  return {
    show() {
      setView('call', page);
      paintParticipants(conf.participantList());
    },
    joined() {
      paintParticipants(conf.participantList());
    },
    layout: () => ({ ...layout }),
  };
}

function renderEnded(room, reason, isError, title = null) {
  for (const t of localStream?.getTracks() ?? []) t.stop();
  localStream = null;
  mediaPromise = null;
  setView('ended', h('div.page.ended', {},
    h('header.topbar', {}, brand()),
    h('main.hero', {},
      h(`div.card.ended-card${isError ? '.error' : ''}`, {},
        h('h2#ended-title', {}, title ?? (isError ? 'Something went wrong' : 'You left the meeting')),
        h('p.sub#ended-reason', {}, reason),
        h('div.dialog-actions', {},
          h('a.btn.ghost', { href: '/' }, 'Home'),
          h('a.btn.primary', { href: `/${room}${location.search}` }, 'Rejoin'))))));
}

// ------------------------------------------------------------------------------------------ test API

window.sluice = {
  _prompt: null,
  view: () => view,
  state: () => ({
    view,
    prompt: window.sluice._prompt,
    xmpp: conference?.state.xmpp ?? 'disconnected',
    ice: conference?.state.ice ?? 'new',
    joined: conference?.state.joined ?? false,
    jingle: conference?.state.jingle ?? 'none',
    focus: conference?.state.focus ?? 'none',
    error: conference?.state.error ?? null,
    nick: conference?.nick ?? null,
    room: conference?.room ?? null,
    affiliation: conference?.affiliation ?? null,
    role: conference?.role ?? null,
    displayName: conference?.displayName ?? null,
    locked: conference?.locked ?? false,
    moderator: conference?.isModerator ?? false,
    mutedByModerator: conference ? { ...conference.mutedByModerator } : { audio: false, video: false },
    avModeration: conference ? { ...conference.avModeration } : null,
    avAllowed: conference ? { ...conference.avAllowed } : null,
    banner: document.getElementById('moderator-muted')?.hidden === false ? document.getElementById('moderator-muted').textContent : '',
    audioMuted: conference?.audioMuted ?? null,
    videoMuted: conference?.videoMuted ?? null,
    counters: conference ? { ...conference.counters } : {},
  }),
  participants: () => (conference ? conference.participantList() : []).map((p) => ({
    id: p.id, name: p.name, local: p.local, audioMuted: p.audioMuted, videoMuted: p.videoMuted,
    screen: Boolean(p.screen), owner: p.owner ?? null, raisedHand: p.raisedHand ?? null,
    affiliation: p.affiliation ?? null, role: p.role ?? null, videoTracks: p.tracks.filter((t) => t.kind === 'video').length,
    audioTracks: p.tracks.filter((t) => t.kind === 'audio').length,
  })),
  getStats: () => (conference ? conference.stats() : {}),
  sentVideo: () => (conference ? conference.sentVideo() : []),
  sentAudio: () => (conference ? conference.sentAudio() : []),
  /** The iceServers (from XEP-0215) and iceTransportPolicy the conference's RTCPeerConnection gets. */
  iceConfig: () => (conference ? conference.iceConfig() : null),
  /** The transport's totals and selected candidate pair (conference.transportStats). */
  transportStats: () => (conference ? conference.transportStats() : null),
  /** Our camera's sender: the bridge's last SenderSourceConstraints maxHeight, the encodings' active flags. */
  sender: () => conference?.senderState() ?? null,
  /** Hands the bridge channel a frame as if the bridge sent it (for messages the bridge will not send on cue). */
  bridgeSays: (text) => {
    if (!conference?.channel) throw new Error('no bridge channel');
    conference.channel.receive(text);
    return conference.channel.snapshot();
  },
  /** The last Jingle stanzas received and sent: [{dir: 'in'|'out', action, xml}]. */
  jingleLog: () => conference?.jingleLog ?? [],
  /**
   * Samples one remote participant's inbound video every `everyMs` for `forMs`, in the page so the samples
   * are evenly spaced, and clicks that participant's tile `clickAtMs` in (when given): {clickedAt, samples:
   * [{t (ms), framesDecoded, frameHeight, packetsLost, freezeCount, totalFreezesDuration}]}.
   */
  sampleVideo: async (owner, forMs, everyMs = 50, clickAtMs = null) => {
    const samples = [];
    let clickedAt = null;
    const t0 = performance.now();
    while (performance.now() - t0 < forMs) {
      if (clickAtMs !== null && clickedAt === null && performance.now() - t0 >= clickAtMs) {
        clickedAt = performance.now() - t0;
        window.sluice.clickTile(owner);
      }
      const s = (await conference.stats())[owner];
      samples.push({ t: performance.now() - t0, framesDecoded: s?.framesDecoded ?? 0, frameHeight: s?.frameHeight ?? 0,
        packetsLost: s?.videoPacketsLost ?? 0, freezeCount: s?.freezeCount ?? 0, totalFreezesDuration: s?.totalFreezesDuration ?? 0 });
      await new Promise((r) => setTimeout(r, everyMs));
    }
    return { clickedAt, samples };
  },
  /** The bridge channel: open, ServerHello and ForwardedSources seen, what we asked for last. */
  channel: () => conference?.channel?.snapshot() ?? null,
  layout: () => ({ ...(callUi?.layout() ?? {}), constraints: conference?.receiverConstraints ?? null }),
  /** Clicks a participant's tile (pins it on stage, or unpins it). */
  clickTile: (id) => {
    const tile = document.querySelector(`.tile[data-id='${CSS.escape(id)}']`);
    if (!tile) throw new Error(`no tile for ${id}`);
    tile.click();
  },
  /**
   * Sends a steady tone instead of the microphone (true), or the microphone again (false): the fake
   * microphone only beeps, too briefly for the bridge's dominant speaker detection.
   */
  tone: async (on) => {
    const sender = conference?.pc?.getSenders().find((x) => x.track?.kind === 'audio');
    if (!sender) throw new Error('no audio sender');
    if (on) {
      testTone ??= (() => {
        const ctx = new AudioContext();
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        gain.gain.value = 0.5;
        const out = ctx.createMediaStreamDestination();
        osc.connect(gain).connect(out);
        osc.start();
        return out.stream.getAudioTracks()[0];
      })();
      await sender.replaceTrack(testTone);
    } else {
      await sender.replaceTrack(localStream.getAudioTracks()[0]);
    }
  },
  /** Clicks the grid/stage button. */
  toggleLayout: () => document.getElementById('toggle-layout').click(),
  /** Clicks a view bar button: 'page-prev', 'page-next', 'toggle-self-view', 'toggle-filmstrip'. */
  clickView: (id) => {
    const b = document.getElementById(id);
    if (!b || b.disabled || b.closest('[hidden]')) throw new Error(`${id} is not there to click`);
    b.click();
  },
  /** The tiles on screen now: ids of those shown (not on another page or hidden) and in the viewport. */
  visibleTiles: () => [...document.querySelectorAll('.tile[data-id]')]
    .filter((t) => !t.classList.contains('off') && t.getBoundingClientRect().height > 0).map((t) => t.dataset.id),
  remoteSources: () => (conference?.remote ? conference.remote.activeSources().map((s) => ({ mid: s.mid, owner: s.owner, media: s.media, name: s.name, ssrcs: s.ssrcs })) : []),
  toggleAudio: () => { conference.setAudioMuted(!conference.audioMuted); return conference.audioMuted; },
  toggleVideo: () => { conference.setVideoMuted(!conference.videoMuted); return conference.videoMuted; },
  leave: () => conference?.leave(),
  setPassword: (pw) => conference.setPassword(pw),
  /** The lobby as this page sees it: {on, jid, waiting (we knock), knockers: [{nick, name}]}. */
  lobby: () => (conference ? conference.lobbyState() : null),
  /** Moderator actions through the page's buttons (as a person would); each resolves when clicked. */
  clickLobbyToggle: () => document.getElementById('toggle-lobby').click(),
  clickAdmit: (nick) => document.querySelector(`.knock[data-nick='${CSS.escape(nick)}'] .admit`).click(),
  clickReject: (nick) => document.querySelector(`.knock[data-nick='${CSS.escape(nick)}'] .reject`).click(),
  clickMuteAll: () => document.getElementById('mute-all').click(),
  /** The participant list's "Stop all video" (the list need not be open). */
  clickStopAllVideo: () => document.getElementById('panel-stop-all-video').click(),
  clickEndMeeting: () => document.getElementById('end-meeting').click(),
  clickAvModeration: () => document.getElementById('toggle-av-moderation').click(),
  /** Clicks the microphone button (the page may refuse to unmute in a moderated meeting). */
  clickMic: () => document.getElementById('toggle-audio').click(),
  /** Opens a participant's moderator menu on its tile (`where` 'tile') or in the participant list ('list'). */
  openMenu: (id, where = 'tile') => {
    const scope = where === 'tile' ? `.tile[data-id='${CSS.escape(id)}']` : `.person[data-id='${CSS.escape(id)}']`;
    const btn = document.querySelector(`${scope} .menu-btn`);
    if (!btn) throw new Error(`no moderator menu for ${id} in the ${where}`);
    btn.click();
    return [...document.querySelectorAll('#person-menu .menu-item')].map((b) => b.id);
  },
  clickMenu: (itemId) => document.getElementById(itemId).click(),
  /**
   * The conference's moderator calls made directly, whatever the page shows (a non-moderator's attempts):
   * resolves 'ok' or the error's text.
   */
  moderate: async (action, ...args) => {
    try {
      await conference[action](...args);
      return 'ok';
    } catch (e) {
      return e.message;
    }
  },
  /** Fills the pre-join form and clicks Join (as a person would). */
  join: (name) => {
    const input = document.getElementById('display-name');
    if (!input) throw new Error(`not on the pre-join screen (view ${view})`);
    input.value = name;
    input.dispatchEvent(new Event('input'));
    document.getElementById('join-button').click();
  },
  /** Types into the login prompt (secure domain) and submits it. */
  submitLogin: (username, password) => {
    const user = document.getElementById('login-username');
    if (!user) throw new Error('no login prompt');
    user.value = username;
    document.getElementById('login-password').value = password;
    document.getElementById('login-submit').click();
  },
  /** The login prompt's error line ('' when none is shown). */
  loginError: () => document.getElementById('login-error')?.textContent ?? null,
  /** The ended screen's reason ('' when not on it). */
  endedReason: () => document.getElementById('ended-reason')?.textContent ?? '',
  /** Types into the password prompt and submits it. */
  submitPassword: (pw) => {
    const input = document.getElementById('password-input');
    if (!input) throw new Error('no password prompt');
    input.value = pw;
    document.getElementById('password-submit').click();
  },
};

// ------------------------------------------------------------------------------------------------ route

function route() {
  const path = decodeURIComponent(location.pathname).replace(/^\/+|\/+$/g, '');
  if (!path) return renderLanding();
  if (!ROOM_RE.test(path)) return renderLanding(`"${path}" is not a valid room name.`);
  document.title = `${path} · Sluice`;
  loadConfig().catch(() => {}); // warm up
  return renderPrejoin(path);
}

window.addEventListener('beforeunload', () => {
  if (conference && !conference.left) conference.leave();
});

route();
