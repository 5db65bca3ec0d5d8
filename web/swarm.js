// Swarm monitor: polls GET /api/v1/state every 2 s and draws, per model, a block coverage strip and
// one row per server with its block map (the health.petals.dev layout).
import { $, el, apiFetch, initPage, poll, renderContributors, fmtNum, fmtTime, shortId, setText, dash } from './common.js';

initPage('swarm');

const POLL_MS = 2000;
const STATES = ['online', 'joining', 'unreachable', 'offline'];
let lastText = null;

// Strip of `n` narrow cells; `cell(i)` returns [className, title, dataCount?] for block i.
function strip(kind, n, cell) {
  const wrap = el('div', { class: `strip ${kind}`, role: 'img' });
  wrap.style.setProperty('--n', String(Math.max(n, 1)));
  for (let i = 0; i < n; i++) {
    const [cls, title, count] = cell(i);
    wrap.append(el('span', { class: `block ${cls}`.trim(), title, 'data-count': count }));
  }
  return wrap;
}

// Runs of blocks that no online server covers, as "start:end" (end exclusive, like --blocks).
function gaps(coverage) {
  const out = [];
  for (let i = 0; i < coverage.length; i++) {
    if (coverage[i] > 0) continue;
    const start = i;
    while (i + 1 < coverage.length && coverage[i + 1] === 0) i++;
    out.push(`${start}:${i + 1}`);
  }
  return out;
}

const num = (v, digits, unit) => (v === null || v === undefined ? dash : `${fmtNum(v, digits)}${unit ? ` ${unit}` : ''}`);
const state = (s) => (STATES.includes(s) ? s : 'unknown');

function serverRow(s, numBlocks) {
  const st = state(s.state);
  const precision = [s.dtype, s.backend].filter(Boolean).join(' / ') || dash;
  return el('tr', { class: `server row-${st}`, 'data-peer-id': s.peer_id },
    el('td', { class: 'peer' }, el('code', { title: s.peer_id }, shortId(s.peer_id, s.short_peer_id))),
    el('td', { class: 'name' }, s.public_name || dash, s.using_relay ? el('span', { class: 'muted small', title: 'reachable only through a relay (slower)' }, ' · relay') : ''),
    el('td', { class: `state state-text-${st}`, title: s.error || null }, String(s.state ?? 'unknown')),
    el('td', { class: 'span' }, `${s.start}:${s.end}`),
    el('td', { class: 'num' }, num(s.throughput, 1, 'tok/s')),
    el('td', { class: 'num' }, num(s.cache_tokens_left, 0)),
    el('td', { class: 'nowrap' }, s.version || dash),
    el('td', { class: 'nowrap' }, precision),
    el('td', { class: 'num' }, num(s.sessions, 0)),
    el('td', { class: 'num' }, num(s.rtt_ms, 1, 'ms')),
    el('td', { class: 'blocks' }, strip('server-strip', numBlocks, (i) =>
      i >= s.start && i < s.end ? [`state-${st}`, `block ${i}: ${st}`] : ['', `block ${i}`])));
}

function modelSection(m, index) {
  const n = m.num_blocks ?? (m.coverage || []).length;
  const coverage = m.coverage || [];
  const servers = [...(m.servers || [])].sort((a, b) => a.start - b.start || a.end - b.end || STATES.indexOf(a.state) - STATES.indexOf(b.state));
  const online = servers.filter((s) => s.state === 'online').length;
  const healthy = m.state === 'healthy';
  const missing = gaps(coverage);
  const issues = servers.filter((s) => s.state === 'unreachable' || s.error);

  const section = el('section', { class: 'model card', 'data-model': m.name, id: `model-${index}` },
    el('div', { class: 'model-head' },
      el('h2', {}, m.name),
      el('span', { class: `badge model-state ${healthy ? 'ok' : 'bad'}` }, healthy ? 'healthy' : 'broken'),
      el('span', { class: 'muted' },
        `${n} blocks · min replication ${m.min_replication ?? dash} · ${online} of ${servers.length} servers online`)),
    el('div', { class: 'coverage-row' },
      el('span', { class: 'muted small' }, 'coverage'),
      // the strip itself is .coverage, so `.coverage .block` selects one cell per block
      strip('coverage', n, (i) => {
        const c = coverage[i] ?? 0;
        return [`cov-${Math.min(c, 3)}`, `block ${i}: ${c} server${c === 1 ? '' : 's'}`, String(c)];
      })));

  if (!healthy) {
    section.append(el('p', { class: 'hint' },
      missing.length
        ? `No online server covers blocks ${missing.join(', ')}. Serve them to fix the model: `
        : 'Some blocks lack a reachable server. ',
      missing.length ? el('code', {}, `bmrt-node --blocks ${missing[0]}`) : null));
  }

  section.append(el('div', { class: 'table-wrap' },
    el('table', { class: 'table servers' },
      el('thead', {}, el('tr', {},
        el('th', {}, 'Server'), el('th', {}, 'Name'), el('th', {}, 'State'), el('th', {}, 'Span'),
        el('th', { class: 'num', title: 'announced tokens/s' }, 'Throughput'),
        el('th', { class: 'num', title: 'attention-cache tokens left' }, 'Cache'),
        el('th', {}, 'Version'), el('th', {}, 'Precision'),
        el('th', { class: 'num', title: 'open inference sessions' }, 'Sessions'),
        el('th', { class: 'num', title: 'probe round trip from this gateway' }, 'RTT'),
        el('th', { class: 'blocks-head' }, `Blocks 0–${Math.max(n - 1, 0)}`))),
      el('tbody', {}, servers.length
        ? servers.map((s) => serverRow(s, n))
        : el('tr', {}, el('td', { colspan: 11, class: 'empty' }, 'No server announces this model.'))))));

  if (issues.length) {
    section.append(el('div', { class: 'issues' },
      el('h3', {}, 'Reachability issues'),
      el('ul', {}, issues.map((s) => el('li', {},
        el('code', { title: s.peer_id }, shortId(s.peer_id, s.short_peer_id)), ' ',
        s.public_name ? `(${s.public_name}) ` : '',
        el('span', { class: 'err' }, s.error || 'does not answer probes'))))));
  }
  return section;
}

function render(st) {
  const g = st.gateway || {};
  setText($('#gateway'), [
    g.peer_id ? `Gateway ${shortId(g.peer_id)}` : 'Gateway',
    g.version ? `v${g.version}` : null,
    g.model ? `serving ${g.model}` : null,
    st.update_period ? `snapshot every ${st.update_period} s` : null,
  ].filter(Boolean).join(' · '));
  $('#gateway').title = g.peer_id || '';

  const models = st.models || [];
  $('#toc').replaceChildren(...models.map((m, i) =>
    el('a', { href: `#model-${i}`, class: m.state === 'healthy' ? 'ok' : 'bad' }, m.name)));
  $('#models').replaceChildren(...(models.length
    ? models.map(modelSection)
    : [el('p', { class: 'card empty' }, 'No model is announced in the swarm yet.')]));
  renderContributors($('#contributors'), st.contributors);
}

async function refresh() {
  const box = $('#swarm-error');
  try {
    const res = await apiFetch('api/v1/state');
    const text = await res.text();
    const st = JSON.parse(text);
    if (text !== lastText) render(st); // unchanged snapshot: leave the DOM (and any selection) alone
    lastText = text;
    box.hidden = true;
    document.body.classList.remove('stale');
    setText($('#updated'), `${fmtTime(st.updated_at)} (checked ${new Date().toLocaleTimeString()})`);
  } catch (err) {
    box.textContent = `Cannot load the swarm state: ${err.message}${lastText ? ' — showing the last snapshot.' : ''}`;
    box.hidden = false;
    document.body.classList.add('stale');
  }
}

const poller = poll(refresh, POLL_MS);
window.addEventListener('bmrt:apikey', () => poller.now());
