// Job board: submit generations to the gateway's queue (POST /api/v1/jobs) and watch them run.
// The list polls every second and updates rows in place (keyed by job id), so a Cancel click or a
// text selection in an output is not lost to a re-render.
import { $, el, apiFetch, apiJson, initPage, poll, renderContributors, fmtNum, fmtSeconds, fmtTime, shortId, setText, dash } from './common.js';

initPage('jobs');

const POLL_MS = 1000;
const ACTIVE = new Set(['queued', 'running']);
const rows = new Map(); // job id -> { tr, cells }
let loadedOnce = false;

const form = $('#job-form');
const formError = $('#job-error');
const listError = $('#jobs-error');
const tbody = $('#jobs').tBodies[0];

function newRow(job) {
  const cells = {
    id: el('td', { class: 'id' }, el('code', {})),
    status: el('td', { class: 'status' }, el('span', { class: 'badge status-word' }), el('span', { class: 'position' })),
    prompt: el('td', { class: 'prompt' }, el('div', { class: 'clamp' })),
    servedBy: el('td', { class: 'served-by' }),
    tokens: el('td', { class: 'tokens num' }),
    duration: el('td', { class: 'duration num' }),
    tps: el('td', { class: 'tps num' }),
    output: el('td', { class: 'output' }),
    actions: el('td', { class: 'actions' }),
  };
  const tr = el('tr', { class: loadedOnce ? 'job new' : 'job', 'data-job-id': job.id }, Object.values(cells));
  return { tr, cells, chainKey: null };
}

// "…a1b2c3 0:2 → …d4e5f6 2:5", each hop titled with its full peer id.
function renderChain(td, chain) {
  const parts = [];
  chain.forEach((hop, i) => {
    if (i) parts.push(' → ');
    parts.push(el('span', { class: 'hop', title: hop.peer_id }, `${shortId(hop.peer_id, hop.short_peer_id)} ${hop.start}:${hop.end}`));
  });
  td.replaceChildren(...(parts.length ? parts : [dash]));
}

function duration(job) {
  if (job.duration_s !== null && job.duration_s !== undefined) return fmtSeconds(job.duration_s);
  if (job.status === 'running' && job.started_at) return `${fmtSeconds(Math.max(0, Date.now() / 1000 - job.started_at))}…`;
  return dash;
}

function updateRow(row, job) {
  const { tr, cells } = row;
  tr.dataset.status = job.status;
  const code = cells.id.firstChild;
  setText(code, job.id);
  code.title = `${job.id}\nmodel ${job.model ?? dash}\npriority ${job.priority ?? 0}, credit rank ${job.credit_rank ?? 0}\ncreated ${fmtTime(job.created_at)}`;

  const [word, pos] = cells.status.children;
  setText(word, job.status);
  word.className = `badge status-word status-${job.status}`;
  setText(pos, job.status === 'queued' && job.queue_position ? ` #${job.queue_position}` : '');
  cells.status.title = job.error || (job.finish_reason ? `finish: ${job.finish_reason}` : '');

  // Another client's job shows its progress, not its prompt or output (the gateway sends neither).
  const prompt = job.owned === false ? "(another client's job)" : (job.prompt ?? '');
  setText(cells.prompt.firstChild, prompt);
  cells.prompt.title = prompt;

  const chain = job.served_by || [];
  const key = JSON.stringify(chain);
  if (key !== row.chainKey) {
    row.chainKey = key;
    renderChain(cells.servedBy, chain);
  }

  setText(cells.tokens, `${job.prompt_tokens ?? 0} + ${job.completion_tokens ?? 0}`);
  setText(cells.duration, duration(job));
  setText(cells.tps, job.tokens_per_second ? fmtNum(job.tokens_per_second, 1) : dash);

  // Output as plain text; a failure reason is drawn by CSS from data-error so td.output's text
  // stays exactly the generated output.
  setText(cells.output, job.output ?? '');
  if (job.error) cells.output.dataset.error = job.error;
  else delete cells.output.dataset.error;

  const cancel = cells.actions.querySelector('button.cancel');
  if (ACTIVE.has(job.status) && job.owned !== false && !cancel) {
    cells.actions.append(el('button', { type: 'button', class: 'cancel small', onclick: () => cancelJob(job.id) }, 'Cancel'));
  } else if ((!ACTIVE.has(job.status) || job.owned === false) && cancel) {
    cancel.remove();
  }
}

function renderQueue(q) {
  const box = $('#queue');
  if (!q) return;
  const tile = (value, label) => el('div', { class: 'stat' }, el('span', { class: 'value' }, String(value ?? dash)), el('span', { class: 'label' }, label));
  const running = q.concurrency ? `${q.running ?? 0}/${q.concurrency}` : q.running;
  const key = JSON.stringify(q);
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(tile(q.queued, 'queued'), tile(running, 'running'), tile(q.max_queued, 'max queued'));
  box.title = `${q.queued} queued, ${q.running} running (at most ${q.concurrency} at once), queue limit ${q.max_queued}`;
}

function render(body) {
  const jobs = body.jobs || [];
  const seen = new Set();
  for (const job of jobs) {
    seen.add(job.id);
    let row = rows.get(job.id);
    if (!row) rows.set(job.id, (row = newRow(job)));
    updateRow(row, job);
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  // Put rows in the server's order (newest first); append() moves existing nodes without rebuilding.
  jobs.forEach((job, i) => {
    const tr = rows.get(job.id).tr;
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
  $('#jobs-empty').hidden = jobs.length > 0;
  renderQueue(body.queue);
  renderContributors($('#contributors'), body.contributors);
  loadedOnce = true;
}

async function refresh() {
  try {
    render(await apiJson('api/v1/jobs'));
    listError.hidden = true;
    setText($('#jobs-updated'), new Date().toLocaleTimeString());
  } catch (err) {
    listError.textContent = `Cannot load jobs: ${err.message}`;
    listError.hidden = false;
  }
}

async function cancelJob(id) {
  try {
    await apiFetch(`api/v1/jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
    listError.hidden = true;
  } catch (err) {
    listError.textContent = `Cannot cancel ${id}: ${err.message}`;
    listError.hidden = false;
  }
  poller.now();
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  formError.hidden = true;
  setText($('#job-submitted'), '');
  const prompt = $('#job-prompt').value;
  if (!prompt.trim()) {
    formError.textContent = 'Write a prompt first.';
    formError.hidden = false;
    return;
  }
  const body = { prompt };
  const int = (sel) => parseInt($(sel).value, 10);
  const maxTokens = int('#job-max-tokens');
  const temperature = parseFloat($('#job-temperature').value);
  const priority = int('#job-priority');
  if (Number.isFinite(maxTokens)) body.max_tokens = maxTokens;
  if (Number.isFinite(temperature)) body.temperature = temperature;
  if (Number.isFinite(priority)) body.priority = priority;

  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const job = await apiJson('api/v1/jobs', { method: 'POST', body });
    setText($('#job-submitted'), job && job.id
      ? `Submitted ${job.id}${job.queue_position ? ` (queue position ${job.queue_position})` : ''}.`
      : 'Submitted.');
  } catch (err) {
    // 429 (queue full) and 400 (bad field) carry a readable error.message from the gateway.
    formError.textContent = err.status === 429 ? `Queue full: ${err.message}` : err.message;
    formError.hidden = false;
  } finally {
    button.disabled = false;
    poller.now();
  }
});

// Ctrl/Cmd+Enter submits from the prompt box.
$('#job-prompt').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    form.requestSubmit();
  }
});

const poller = poll(refresh, POLL_MS);
window.addEventListener('bmrt:apikey', () => poller.now());
