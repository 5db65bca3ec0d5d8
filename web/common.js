// Shared helpers for the bmrt pages: header nav, API key, fetch wrapper, DOM building, formatting.
// No framework: every string that comes from the server reaches the DOM through textContent
// (el()/setText()) so model output or peer names can never inject markup.

const KEY_STORAGE = 'bmrt.apiKey';

// ---------- storage (localStorage can throw: private mode, quota, disabled cookies) ----------

export function load(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

export function getApiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || '';
  } catch {
    return '';
  }
}

// This browser's owner token for jobs: sent with every API call, so the jobs it submits are its
// own (the gateway shows and cancels a job only for its owner). Made once, kept with the key.
const OWNER_STORAGE = 'bmrt.jobOwner';
let sessionOwner = '';

function jobOwner() {
  let token = load(OWNER_STORAGE, '');
  if (typeof token === 'string' && token.length >= 16) return token;
  if (sessionOwner) return sessionOwner;
  const bytes = crypto.getRandomValues(new Uint8Array(24)); // randomUUID needs a secure context
  token = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  if (!save(OWNER_STORAGE, token)) sessionOwner = token;
  return token;
}

function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* the key then lives only for this page load */
  }
}

// ---------- DOM ----------

export const $ = (sel, root = document) => root.querySelector(sel);

// el('td', {class: 'x', title: t}, 'text', childNode…): strings become text nodes, never HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Only touch the DOM when the text changed, so polling does not reset a user's text selection.
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

// ---------- formatting ----------

export const dash = '—';

export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return dash;
  return Number(n).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return dash;
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

export function fmtTime(unixSeconds) {
  if (!unixSeconds) return dash;
  return new Date(unixSeconds * 1000).toLocaleTimeString();
}

// "…a1b2c3" from a full peer id when the server did not send a short one.
export function shortId(peerId, short) {
  if (short) return short;
  return peerId ? `…${String(peerId).slice(-6)}` : dash;
}

// ---------- API ----------

export class ApiError extends Error {
  constructor(message, status = 0, type = null, code = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
  }
}

// Turns a non-2xx response into an ApiError carrying the server's OpenAI-shaped error.message.
async function errorFrom(res) {
  let message = `HTTP ${res.status} ${res.statusText}`.trim();
  let type = null;
  let code = null;
  try {
    const text = await res.text();
    try {
      const body = JSON.parse(text);
      const e = body && body.error;
      if (e && typeof e === 'object') {
        if (e.message) message = String(e.message);
        type = e.type ?? null;
        code = e.code ?? null;
      } else if (typeof e === 'string') message = e;
    } catch {
      if (text.trim()) message = text.trim().slice(0, 500);
    }
  } catch {
    /* body unreadable: keep the status line */
  }
  return new ApiError(message, res.status, type, code);
}

// fetch with the stored bearer key and JSON body; resolves to the Response when 2xx, throws
// ApiError otherwise. A 401 opens the API key box so the user can fix it and retry.
export async function apiFetch(path, { method = 'GET', body, signal, headers = {} } = {}) {
  const h = { Accept: 'application/json', 'X-Job-Owner': jobOwner(), ...headers };
  const key = getApiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers: h, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError('Cannot reach the gateway (network error). Is the node running?', 0, 'network_error');
  }
  if (res.ok) return res;
  const err = await errorFrom(res);
  if (res.status === 401) showKeyBox(err.message);
  throw err;
}

export async function apiJson(path, opts) {
  const res = await apiFetch(path, opts);
  return res.status === 204 ? null : res.json();
}

// ---------- polling ----------

// Calls fn every `ms` after the previous call finished (never overlapping); pauses while the tab
// is hidden. Returns { now() } to refresh immediately (e.g. after a submit).
export function poll(fn, ms) {
  let timer = null;
  let running = false;
  let again = false;
  async function tick() {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      if (!document.hidden) await fn();
    } catch (err) {
      console.warn(err);
    } finally {
      running = false;
      if (again) {
        again = false;
        tick();
      } else timer = setTimeout(tick, ms);
    }
  }
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) tick();
  });
  tick();
  return { now: tick };
}

// ---------- page chrome: header nav + API key box ----------

const PAGES = [
  ['chat', 'Chat', './'],
  ['swarm', 'Swarm', 'swarm'],
  ['jobs', 'Jobs', 'jobs'],
];

let keyBox = null;

function showKeyBox(reason) {
  if (!keyBox) return;
  keyBox.hidden = false;
  setText($('.auth-reason', keyBox), reason || 'This gateway needs an API key.');
  $('#api-key', keyBox).focus();
}

// Builds the shared header into <header id="topbar">. Pages listen for the 'bmrt:apikey' event
// (fired on window after the key changed) to reload their data.
export function initPage(active) {
  const header = $('#topbar');
  const nav = el('nav', { class: 'nav', 'aria-label': 'Main' },
    PAGES.map(([id, label, href]) =>
      el('a', { href, class: id === active ? 'active' : null, 'aria-current': id === active ? 'page' : null }, label)));
  const keyToggle = el('button', { type: 'button', class: 'ghost key-toggle', title: 'API key', 'aria-label': 'API key' }, 'API key');
  header.append(el('a', { class: 'brand', href: './' }, el('span', { class: 'logo', 'aria-hidden': 'true' }), 'bmrt'), nav, keyToggle);

  const input = el('input', { id: 'api-key', type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'paste the gateway API key' });
  input.value = getApiKey();
  const apply = () => {
    const v = input.value.trim();
    if (v === getApiKey()) return;
    setApiKey(v);
    keyToggle.classList.toggle('has-key', !!v);
    window.dispatchEvent(new CustomEvent('bmrt:apikey'));
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      apply();
      keyBox.hidden = true;
    }
  });
  input.addEventListener('change', apply);
  keyBox = el('div', { class: 'auth-box', id: 'auth', hidden: true },
    el('label', { for: 'api-key' }, el('strong', {}, 'API key'), ' ', el('span', { class: 'auth-reason muted' })),
    input,
    el('button', { type: 'button', class: 'primary', onclick: () => { apply(); keyBox.hidden = true; } }, 'Save'),
    el('button', { type: 'button', onclick: () => { input.value = ''; apply(); } }, 'Forget'),
    el('span', { class: 'muted small' }, 'Kept in this browser only, sent as Authorization: Bearer.'));
  header.after(keyBox);
  keyToggle.classList.toggle('has-key', !!getApiKey());
  keyToggle.addEventListener('click', () => {
    keyBox.hidden = !keyBox.hidden;
    if (!keyBox.hidden) {
      setText($('.auth-reason', keyBox), getApiKey() ? 'A key is stored.' : 'None stored.');
      input.focus();
    }
  });
}

// ---------- contributors leaderboard (swarm and jobs pages) ----------

export function renderContributors(table, list) {
  const rows = [...(list || [])].sort((a, b) => (b.block_tokens ?? 0) - (a.block_tokens ?? 0) || (b.tokens ?? 0) - (a.tokens ?? 0));
  const tbody = table.tBodies[0] || table.appendChild(el('tbody'));
  if (!rows.length) {
    tbody.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'empty' }, 'No contributions yet.')));
    return;
  }
  tbody.replaceChildren(...rows.map((c, i) =>
    el('tr', { class: 'contributor', 'data-peer-id': c.peer_id },
      el('td', { class: 'rank' }, String(i + 1)),
      el('td', {},
        c.public_name ? el('span', { class: 'name' }, c.public_name) : null,
        el('code', { class: 'peer', title: c.peer_id }, shortId(c.peer_id, c.short_peer_id))),
      el('td', { class: 'num' }, fmtNum(c.jobs)),
      el('td', { class: 'num' }, fmtNum(c.tokens)),
      el('td', { class: 'num' }, fmtNum(c.block_tokens)))));
}
