// Chat page: streams /v1/chat/completions (the same endpoint third-party OpenAI clients use),
// keeps conversations in localStorage, renders assistant replies as sanitized markdown.
import { $, el, apiFetch, apiJson, ApiError, initPage, load, save, escapeHtml, fmtNum, fmtSeconds } from './common.js';

initPage('chat');

const CONVS_KEY = 'bmrt.conversations';
const CURRENT_KEY = 'bmrt.current';
const SETTINGS_KEY = 'bmrt.settings';

const ui = {
  model: $('#model'), system: $('#system'), temperature: $('#temperature'), maxTokens: $('#max-tokens'),
  prompt: $('#prompt'), send: $('#send'), stop: $('#stop'), regenerate: $('#regenerate'),
  newChat: $('#new-chat'), list: $('#conversations'), messages: $('#messages'), speed: $('#speed'),
  composer: $('#composer'), error: $('#error'), errorMessage: $('#error .error-message'), retry: $('#retry'),
};

// ---------- markdown, safely ----------
// Model output is untrusted. Two layers: marked renders raw HTML tokens as escaped text (so
// `<script>` shows literally), and DOMPurify sanitizes whatever marked produced (e.g. javascript:
// links). Images are shown as links so a reply cannot make the browser fetch remote URLs.
const renderMarkdown = (() => {
  const { marked, DOMPurify } = window;
  if (!marked || !marked.Marked || !DOMPurify || !DOMPurify.sanitize) return null;
  const md = new marked.Marked({ gfm: true, breaks: true, async: false });
  md.use({
    renderer: {
      html({ text, block }) {
        const t = escapeHtml(text);
        return block ? `<p>${t.replace(/\n/g, '<br>')}</p>` : t;
      },
      image({ href, text }) {
        return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
      },
    },
  });
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer nofollow');
    }
  });
  const config = { USE_PROFILES: { html: true }, FORBID_TAGS: ['style', 'img', 'form'], FORBID_ATTR: ['style'] };
  return (text) => DOMPurify.sanitize(md.parse(text), config);
})();

function renderContent(node, text) {
  if (renderMarkdown) {
    node.innerHTML = renderMarkdown(text); // sanitized above; the only innerHTML on this page
  } else {
    node.textContent = text; // vendor scripts missing: plain text is still safe and readable
    node.classList.add('plain');
  }
}

// Copy buttons on code blocks, added once a message is complete. The label comes from CSS
// (data-state) so the button adds no text to the message's textContent.
function addCopyButtons(node) {
  for (const pre of node.querySelectorAll('pre')) {
    const btn = el('button', { type: 'button', class: 'copy ghost small', 'aria-label': 'Copy code' });
    btn.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(pre.querySelector('code')?.textContent ?? pre.textContent);
        btn.dataset.state = 'copied';
      } catch {
        btn.dataset.state = 'failed';
      }
      setTimeout(() => delete btn.dataset.state, 1500);
    });
    pre.classList.add('has-copy');
    pre.prepend(btn);
  }
}

// ---------- state ----------

let convs = load(CONVS_KEY, []);
if (!Array.isArray(convs)) convs = [];
let currentId = load(CURRENT_KEY, null);
const settings = { temperature: 0.7, maxTokens: 256, system: '', model: '', ...load(SETTINGS_KEY, {}) };
let active = null; // the stream in flight: { conv, msg, node, controller }
let retryAction = null;

const newId = () => `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const current = () => convs.find((c) => c.id === currentId);

function persist() {
  // On quota errors drop the oldest other conversations until it fits.
  while (!save(CONVS_KEY, convs)) {
    const victim = [...convs].sort((a, b) => a.updated - b.updated).find((c) => c.id !== currentId);
    if (!victim) break;
    convs = convs.filter((c) => c !== victim);
  }
  save(CURRENT_KEY, currentId);
}

function newConversation() {
  const conv = { id: newId(), title: 'New chat', created: Date.now(), updated: Date.now(), messages: [] };
  convs.unshift(conv);
  currentId = conv.id;
  return conv;
}

// ---------- rendering ----------

function messageMeta(m) {
  const x = m.meta || {};
  const parts = [];
  if (x.model) parts.push(x.model);
  if (x.tokens) parts.push(`${fmtNum(x.tokens)} tokens`);
  if (x.tps) parts.push(`${fmtNum(x.tps, 1)} tok/s`);
  if (x.seconds) parts.push(fmtSeconds(x.seconds));
  if (x.stopped) parts.push('stopped');
  else if (x.error) parts.push('interrupted');
  else if (x.finish === 'length') parts.push('cut at max tokens');
  return parts.join(' · ');
}

function renderMessage(m, done = true) {
  const content = el('div', { class: 'content' });
  const node = el('div', { class: `message ${m.role}` },
    el('div', { class: 'role' }, m.role === 'user' ? 'You' : 'Assistant'), content);
  if (m.role === 'user') {
    content.textContent = m.content; // user text is never interpreted
  } else {
    renderContent(content, m.content);
    node.append(el('div', { class: 'meta' }, messageMeta(m)));
    if (done) {
      node.dataset.done = 'true';
      addCopyButtons(content);
    }
  }
  ui.messages.append(node);
  return node;
}

function renderConversation() {
  const conv = current();
  ui.messages.replaceChildren();
  if (!conv || !conv.messages.length) {
    ui.messages.append(el('div', { class: 'empty-state' },
      el('h1', {}, 'Chat with the swarm'),
      el('p', { class: 'muted' }, 'Your messages run through a chain of peers, each serving some of the model’s blocks. ',
        el('a', { href: 'swarm' }, 'See who is serving'), '.')));
  } else {
    for (const m of conv.messages) renderMessage(m);
  }
  ui.messages.scrollTop = ui.messages.scrollHeight;
  renderList();
  updateButtons();
}

function renderList() {
  const sorted = [...convs].sort((a, b) => b.updated - a.updated);
  ui.list.replaceChildren(...sorted.map((c) =>
    el('li', { class: c.id === currentId ? 'conv active' : 'conv', 'data-id': c.id },
      el('button', { type: 'button', class: 'conv-open', title: c.title, onclick: () => switchTo(c.id) }, c.title || 'New chat'),
      el('button', { type: 'button', class: 'conv-delete ghost', title: 'Delete conversation', 'aria-label': 'Delete conversation', onclick: () => remove(c.id) }, '×'))));
}

function updateButtons() {
  const streaming = !!active;
  const conv = current();
  ui.send.disabled = streaming;
  ui.stop.disabled = !streaming;
  ui.regenerate.disabled = streaming || !conv || !conv.messages.some((m) => m.role === 'user');
  ui.composer.classList.toggle('streaming', streaming);
}

// `swarmHint`: point at the Swarm page when the failure looks like missing capacity (as chat.petals.dev does).
function showError(message, retry, swarmHint = false) {
  ui.errorMessage.textContent = message;
  $('.error-hint', ui.error).hidden = !swarmHint;
  retryAction = retry;
  ui.retry.hidden = !retry;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  retryAction = null;
}

// ---------- conversations ----------

function switchTo(id) {
  if (id === currentId) return;
  if (active) active.controller.abort();
  currentId = id;
  hideError();
  persist();
  renderConversation();
}

function remove(id) {
  if (active && active.conv.id === id) active.controller.abort();
  convs = convs.filter((c) => c.id !== id);
  if (currentId === id) {
    currentId = [...convs].sort((a, b) => b.updated - a.updated)[0]?.id ?? null;
    if (!currentId) newConversation();
    hideError();
  }
  persist();
  renderConversation();
}

ui.newChat.addEventListener('click', () => {
  if (active) active.controller.abort();
  const conv = current();
  if (!conv || conv.messages.length) newConversation(); // reuse an already-empty chat
  hideError();
  persist();
  renderConversation();
  ui.prompt.focus();
});

// ---------- SSE ----------

// Yields the data of each server-sent event: `data:` lines are joined, `:` comments ignored,
// a blank line ends an event. Cancelling the reader on exit closes the HTTP stream.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        if (line === '') {
          if (data.length) yield data.join('\n');
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line[5] === ' ' ? 6 : 5));
        } // ':' comments and other fields (event:, id:, retry:) are ignored
      }
      if (done) {
        if (buf.startsWith('data:')) data.push(buf.slice(buf[5] === ' ' ? 6 : 5));
        if (data.length) yield data.join('\n');
        return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// ---------- generation ----------

function readSettings() {
  const t = parseFloat(ui.temperature.value);
  const n = parseInt(ui.maxTokens.value, 10);
  Object.assign(settings, {
    model: ui.model.value || settings.model,
    system: ui.system.value,
    temperature: Number.isFinite(t) ? t : null,
    maxTokens: Number.isFinite(n) && n > 0 ? n : null,
  });
  save(SETTINGS_KEY, settings);
}

async function generate() {
  const conv = current();
  if (!conv || active) return;
  hideError();
  readSettings();
  const messages = [];
  if (settings.system.trim()) messages.push({ role: 'system', content: settings.system.trim() });
  for (const m of conv.messages) if (m.content) messages.push({ role: m.role, content: m.content });

  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if (ui.model.value) body.model = ui.model.value;
  if (settings.temperature !== null) body.temperature = settings.temperature;
  if (settings.maxTokens !== null) body.max_tokens = settings.maxTokens;

  const msg = { role: 'assistant', content: '', meta: { model: body.model || '' } };
  conv.messages.push(msg);
  ui.messages.querySelector('.empty-state')?.remove();
  const node = renderMessage(msg, false);
  node.classList.add('streaming');
  const content = node.querySelector('.content');
  const controller = new AbortController();
  active = { conv, msg, node, controller };
  updateButtons();
  ui.speed.textContent = 'waiting for the swarm…';
  ui.messages.scrollTop = ui.messages.scrollHeight;

  const t0 = performance.now();
  let chunks = 0;
  let usage = null;
  let finish = null;
  let frame = 0;
  const paint = () => {
    frame = 0;
    const stick = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
    renderContent(content, msg.content);
    const secs = (performance.now() - t0) / 1000;
    ui.speed.textContent = `${fmtNum(chunks / secs, 1)} tok/s · ${chunks} tokens`;
    if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
  };

  try {
    const res = await apiFetch('v1/chat/completions', { method: 'POST', body, signal: controller.signal, headers: { Accept: 'text/event-stream' } });
    let sawDone = false;
    for await (const data of sseEvents(res.body)) {
      if (data === '[DONE]') {
        sawDone = true;
        break;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        continue; // tolerate a malformed line rather than lose the reply
      }
      if (chunk.error) {
        const e = typeof chunk.error === 'object' ? chunk.error : { message: String(chunk.error) };
        throw new ApiError(e.message || 'The stream reported an error.', 0, e.type, e.code);
      }
      if (chunk.usage) usage = chunk.usage;
      if (chunk.model && !msg.meta.model) msg.meta.model = chunk.model;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const piece = choice.delta && choice.delta.content;
      if (piece) {
        msg.content += piece;
        chunks++;
        if (!frame) frame = requestAnimationFrame(paint);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    if (!sawDone && !finish) throw new ApiError('The stream ended before the reply was complete.');
  } catch (err) {
    if (err && err.name === 'AbortError') {
      msg.meta.stopped = true;
    } else {
      msg.meta.error = err.message || String(err);
      showError(msg.meta.error, regenerate, err.status === 503 || /capacity|no server|not enough|unavailable/i.test(msg.meta.error));
    }
  } finally {
    if (frame) cancelAnimationFrame(frame);
    const secs = (performance.now() - t0) / 1000;
    const tokens = usage?.completion_tokens ?? chunks;
    Object.assign(msg.meta, { tokens, seconds: secs, tps: tokens && secs > 0 ? tokens / secs : null, finish });
    if (!msg.content && !msg.meta.stopped) {
      // Nothing arrived (e.g. the request failed): drop the empty bubble, keep the question.
      conv.messages.pop();
      node.remove();
    } else {
      renderContent(content, msg.content);
      addCopyButtons(content);
      node.querySelector('.meta').textContent = messageMeta(msg);
      node.classList.remove('streaming');
      node.dataset.done = 'true';
    }
    ui.speed.textContent = msg.meta.error
      ? ''
      : `${fmtNum(tokens)} tokens in ${fmtSeconds(secs)} · ${fmtNum(msg.meta.tps ?? 0, 1)} tok/s${msg.meta.stopped ? ' (stopped)' : ''}`;
    conv.updated = Date.now();
    active = null;
    persist();
    renderList();
    updateButtons();
  }
}

function send() {
  const text = ui.prompt.value.trim();
  if (!text || active) return;
  let conv = current();
  if (!conv) conv = newConversation();
  if (!conv.messages.length) conv.title = text.replace(/\s+/g, ' ').slice(0, 48);
  conv.messages.push({ role: 'user', content: text });
  conv.updated = Date.now();
  ui.prompt.value = '';
  ui.messages.querySelector('.empty-state')?.remove();
  renderMessage(conv.messages.at(-1));
  persist();
  renderList();
  generate();
}

// Re-ask the last user turn: drop everything after it, then stream a new answer.
function regenerate() {
  const conv = current();
  if (!conv || active) return;
  let last = -1;
  conv.messages.forEach((m, i) => { if (m.role === 'user') last = i; });
  if (last < 0) return;
  conv.messages.length = last + 1;
  renderConversation();
  generate();
}

// ---------- models ----------

async function loadModels() {
  try {
    const body = await apiJson('v1/models');
    const ids = (body?.data || []).map((m) => String(m.id));
    ui.model.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
    if (!ids.length) ui.model.append(el('option', { value: '' }, '(no model listed)'));
    if (ids.includes(settings.model)) ui.model.value = settings.model;
    if (ui.error.hidden === false && retryAction === loadModels) hideError();
  } catch (err) {
    ui.model.replaceChildren(el('option', { value: '' }, '(unavailable)'));
    showError(`Could not list models: ${err.message}`, loadModels);
  }
}

// ---------- wiring ----------

ui.system.value = settings.system || '';
if (settings.temperature !== null && settings.temperature !== undefined) ui.temperature.value = settings.temperature;
if (settings.maxTokens) ui.maxTokens.value = settings.maxTokens;
for (const input of [ui.model, ui.system, ui.temperature, ui.maxTokens]) input.addEventListener('change', readSettings);

ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
ui.stop.addEventListener('click', () => active && active.controller.abort());
ui.regenerate.addEventListener('click', regenerate);
ui.retry.addEventListener('click', () => {
  const action = retryAction;
  hideError();
  if (action) action();
});
$('.error-close', ui.error).addEventListener('click', hideError);
window.addEventListener('bmrt:apikey', loadModels);

if (!current()) {
  if (convs.length) currentId = [...convs].sort((a, b) => b.updated - a.updated)[0].id;
  else newConversation();
}
renderConversation();
loadModels();
