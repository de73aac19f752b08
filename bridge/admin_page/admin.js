// The operator's admin page (bridge/admin.py). Every name in the state (rooms, nicks, display names) came
// from remote parties: it is only ever written with textContent, never as HTML.

const POLL_MS = 2000;
let last = null;
let needsLogin = false;
let lastError = '';
let lastAction = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'data') Object.assign(node.dataset, v);
    else if (k === 'onclick') node.addEventListener('click', v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let json = null;
  try { json = await resp.json(); } catch { json = null; }
  return { status: resp.status, json };
}

const kbps = (bps) => (bps == null ? '–' : `${Math.round(bps / 1000)}`);
const pct = (x) => (x == null ? '–' : `${(x * 100).toFixed(1)} %`);
const ms = (x) => (x == null ? '–' : `${Math.round(x)}`);
const muted = (m) => (m == null ? '?' : (m ? 'muted' : 'on'));

function renderBridges(state) {
  const body = $('bridges').querySelector('tbody');
  body.replaceChildren(...state.bridges.map((b) => el('tr', {},
    el('td', {}, b.name), el('td', { class: `num${b.stress >= 0.8 ? ' bad' : ''}` }, b.stress.toFixed(3)),
    el('td', {}, b.operational ? 'yes' : 'no'), el('td', {}, b.drain ? 'yes' : 'no'),
    el('td', {}, b.version ?? '–'))));
}

function renderRooms(state) {
  const rooms = state.rooms.map((r) => {
    const end = el('button', { type: 'button', class: 'danger', data: { action: 'end', room: r.room },
      onclick: () => endMeeting(r.room) }, 'End meeting');
    const head = el('h3', {}, r.room,
      el('span', { class: 'meta' }, `${r.participant_count} participant(s) · bridge ${r.bridge ?? '–'}`));
    if (state.actions) head.append(end);
    const rows = r.participants.map((p) => {
      const cells = [
        el('td', {}, p.name ?? ''), el('td', {}, p.nick), el('td', {}, p.endpoint ?? '–'),
        el('td', {}, p.moderator ? 'moderator' : ''),
        el('td', {}, `${muted(p.audio_muted)} / ${muted(p.video_muted)}`),
        el('td', { class: 'num' }, kbps(p.up_bps)), el('td', { class: 'num' }, kbps(p.down_bps)),
        el('td', { class: `num${(p.loss ?? 0) >= 0.1 ? ' bad' : (p.loss ?? 0) >= 0.02 ? ' fair' : ''}` },
          pct(p.loss)),
        el('td', { class: `num${(p.rtt_ms ?? 0) >= 500 ? ' bad' : ''}` }, ms(p.rtt_ms)),
        el('td', { class: 'num' }, ms(p.jitter_ms)),
      ];
      if (state.actions) {
        cells.push(el('td', {}, el('button', { type: 'button', data: { action: 'kick', room: r.room, nick: p.nick },
          onclick: () => kick(r.room, p.nick) }, 'Kick')));
      }
      return el('tr', {}, ...cells);
    });
    const heads = ['Name', 'Nick', 'Endpoint', 'Role', 'Audio / video', 'Up kbit/s', 'Down kbit/s', 'Loss',
      'RTT ms', 'Jitter ms', ...(state.actions ? [''] : [])];
    const more = r.participant_count > r.participants.length
      ? [el('p', {}, `… and ${r.participant_count - r.participants.length} more`)] : [];
    return el('div', { class: 'room' }, head,
      el('table', {}, el('thead', {}, el('tr', {}, ...heads.map((h) => el('th', {}, h)))), el('tbody', {}, ...rows)),
      ...more);
  });
  if (state.room_count > state.rooms.length) rooms.push(el('p', {}, `… and ${state.room_count - state.rooms.length} more rooms`));
  if (!rooms.length) rooms.push(el('p', {}, 'No meetings now.'));
  $('rooms').replaceChildren(...rooms);
  const b = state.this_bridge;
  $('summary').textContent = `${state.room_count} room(s), ${state.participant_count} participant(s); `
    + `this bridge: ${b.conferences} conference(s), ${b.endpoints} endpoint(s), stress ${b.stress.toFixed(3)}`;
}

async function refresh() {
  const { status, json } = await api('GET', '/admin/state');
  if (status === 401) {
    needsLogin = true;
    $('login').hidden = false;
    $('main').hidden = true;
    $('logout').hidden = true;
    return;
  }
  if (status !== 200 || !json) {
    lastError = `state: HTTP ${status}`;
    return;
  }
  needsLogin = false;
  last = json;
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = false;
  renderBridges(json);
  renderRooms(json);
}

async function login(token) {
  const { status, json } = await api('POST', '/admin/login', { token });
  $('login-error').textContent = status === 200 ? '' : (json?.error ?? `HTTP ${status}`);
  await refresh();
  return status === 200;
}

async function act(path, body, what) {
  const { status, json } = await api('POST', path, body);
  lastAction = { path, status };
  $('message').textContent = status === 202 ? `${what}: sent` : `${what}: ${json?.error ?? `HTTP ${status}`}`;
  setTimeout(refresh, 300);
  return status;
}

const endMeeting = (room) => act('/admin/end', { room }, `End ${room}`);
const kick = (room, nick) => act('/admin/kick', { room, nick }, `Kick ${nick}`);

function click(action, room, nick) {
  const button = [...document.querySelectorAll('button[data-action]')].find((b) => b.dataset.action === action
    && b.dataset.room === room && (nick === undefined || b.dataset.nick === nick));
  if (!button) throw new Error(`no ${action} button for ${room} ${nick ?? ''}`);
  button.click();
  return true;
}

$('login-form').addEventListener('submit', (e) => { e.preventDefault(); login($('token').value); });
$('logout').addEventListener('click', async () => { await api('POST', '/admin/logout', {}); await refresh(); });

// The test API (tests/e2e/test_admin_page.py), like the web client's window.sluice.
window.sluice = {
  state: () => ({ needsLogin, state: last, error: lastError, lastAction }),
  login,
  refresh: async () => { await refresh(); return true; },
  click,
  // What the page shows as text (no element of it is built from the state's strings as HTML).
  roomsText: () => $('rooms').textContent,
  injectedElements: () => document.querySelectorAll('#rooms script, #rooms img, #rooms b').length,
};

refresh();
setInterval(refresh, POLL_MS);
