// Herald's admin page. Everything it shows comes from the server API, called through
// /admin/api/<method> with the session cookie; the live tail reads /admin/tail. Text from
// the server is only ever set as text, never parsed as markup.

const $ = (id) => document.getElementById(id);
const NODES_EVERY_MS = 2000;
const CHANNELS_EVERY_MS = 5000;
const CHANNELS_PER_PAGE = 20;
const TAIL_KEEP = 100;

const state = {
  signedIn: false,
  timers: [],
  channels: [],
  channelsPage: 0,
  tail: null,
};

class SignedOut extends Error {}

/** Calls a server API method; resolves to its result, rejects with its error message. */
async function call(method, params = {}) {
  let response;
  try {
    response = await fetch(`/admin/api/${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-herald-admin': '1' },
      body: JSON.stringify(params),
      credentials: 'same-origin',
    });
  } catch {
    throw new Error('the node cannot be reached');
  }
  if (response.status === 401) throw new SignedOut();
  let body = null;
  try {
    body = await response.json();
  } catch {
    throw new Error(`the node answered ${response.status} without JSON`);
  }
  if (body && body.error) throw new Error(body.error.message || `error ${body.error.code}`);
  if (!response.ok) throw new Error(`the node answered ${response.status}`);
  return body ? body.result : undefined;
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function uptime(seconds) {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  return `${m}m ${seconds % 60}s`;
}

const number = (n) => Number(n || 0).toLocaleString('en-US');
const time = (ms) => new Date(ms).toLocaleTimeString('en-GB');

function showProblem(message) {
  const p = $('problem');
  p.textContent = message || '';
  p.hidden = !message;
}

function handle(error) {
  if (error instanceof SignedOut) return signOut(false);
  showProblem(String(error && error.message ? error.message : error));
}

// ---- nodes and disconnects ----------------------------------------------------------

function renderNodes(nodes) {
  const body = $('nodes-body');
  body.replaceChildren();
  let clients = 0;
  let subs = 0;
  for (const n of nodes) {
    clients += n.num_clients || 0;
    subs += n.num_subs || 0;
    const row = document.createElement('tr');
    row.dataset.node = n.uid;
    const name = cell(row, n.name);
    name.title = n.uid;
    const health = cell(row, n.ready ? 'ready' : `not ready${n.not_ready ? `: ${n.not_ready}` : ''}`);
    health.className = n.ready ? 'ok' : 'bad';
    cell(row, number(n.num_clients), 'num');
    cell(row, number(n.num_users), 'num');
    cell(row, number(n.num_subs), 'num');
    cell(row, number(n.num_channels), 'num');
    cell(row, (n.publication_rate || 0).toFixed(1), 'num');
    cell(row, uptime(n.uptime || 0));
    cell(row, n.broker || '');
    cell(row, n.version || '');
    body.appendChild(row);
  }
  const plural = (k, word) => `${number(k)} ${word}${k === 1 ? '' : 's'}`;
  $('summary').textContent = `${plural(nodes.length, 'node')} · ${plural(clients, 'connection')} · ${plural(subs, 'subscription')}`;
}

function renderDisconnects(nodes) {
  const all = [];
  for (const n of nodes) {
    for (const d of n.recent_disconnects || []) all.push({ ...d, node: n.name });
  }
  all.sort((a, b) => b.at - a.at);
  const counts = new Map();
  for (const d of all) counts.set(d.code, (counts.get(d.code) || 0) + 1);
  $('disconnect-codes').textContent = all.length === 0
    ? 'No connection was closed by a node lately.'
    : 'By code: ' + [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([code, k]) => `${code} ×${k}`).join(', ');
  const body = $('disconnects-body');
  body.replaceChildren();
  for (const d of all.slice(0, 50)) {
    const row = document.createElement('tr');
    cell(row, time(d.at));
    cell(row, d.node);
    cell(row, String(d.code), 'num');
    cell(row, d.reason || '');
    cell(row, d.user || '');
    cell(row, d.client || '');
    body.appendChild(row);
  }
}

async function refreshNodes() {
  const info = await call('info');
  const nodes = (info && info.nodes) || [];
  renderNodes(nodes);
  renderDisconnects(nodes);
  showProblem('');
}

// ---- channels -----------------------------------------------------------------------

function pattern() {
  const text = $('channel-filter').value.trim();
  if (!text) return '';
  return text.includes('*') ? text : `*${text}*`;
}

function renderChannels() {
  const pages = Math.max(1, Math.ceil(state.channels.length / CHANNELS_PER_PAGE));
  state.channelsPage = Math.min(state.channelsPage, pages - 1);
  const start = state.channelsPage * CHANNELS_PER_PAGE;
  const body = $('channels-body');
  body.replaceChildren();
  for (const [name, count] of state.channels.slice(start, start + CHANNELS_PER_PAGE)) {
    const row = document.createElement('tr');
    cell(row, name);
    cell(row, number(count), 'num');
    const actions = document.createElement('td');
    const follow = document.createElement('button');
    follow.type = 'button';
    follow.className = 'link';
    follow.textContent = 'Follow';
    follow.addEventListener('click', () => {
      $('tail-channel').value = name;
      $('publish-channel').value = name;
      startTail(name);
    });
    actions.appendChild(follow);
    row.appendChild(actions);
    body.appendChild(row);
  }
  $('channels-page').textContent = state.channels.length === 0
    ? 'no channels'
    : `${start + 1}–${Math.min(start + CHANNELS_PER_PAGE, state.channels.length)} of ${number(state.channels.length)}, page ${state.channelsPage + 1} of ${pages}`;
  $('channels-prev').disabled = state.channelsPage === 0;
  $('channels-next').disabled = state.channelsPage >= pages - 1;
}

async function refreshChannels() {
  const result = await call('channels', pattern() ? { pattern: pattern() } : {});
  const entries = Object.entries((result && result.channels) || {}).map(([name, c]) => [name, c.num_clients || 0]);
  entries.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  state.channels = entries;
  const notes = [];
  if (result && result.missing_nodes) notes.push(`not answering: ${result.missing_nodes.join(', ')}`);
  if (result && result.truncated) notes.push('a node has more matching channels than it lists; narrow the search');
  notes.unshift('Channels with subscribers on any node, the most subscribed first.');
  $('channels-note').textContent = notes.join(' ');
  renderChannels();
}

// ---- live tail ----------------------------------------------------------------------

function tailStatus(text, className = 'muted') {
  const p = $('tail-status');
  p.textContent = text;
  p.className = className;
}

function addTailEntry(push) {
  const pub = (push && push.push && push.push.pub) || {};
  const li = document.createElement('li');
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${time(Date.now())}${pub.offset ? ` #${pub.offset}` : ''}`;
  li.appendChild(meta);
  li.appendChild(document.createTextNode(JSON.stringify(pub.data === undefined ? null : pub.data)));
  if (pub.tags) {
    const tags = document.createElement('span');
    tags.className = 'meta';
    tags.textContent = `  tags ${JSON.stringify(pub.tags)}`;
    li.appendChild(tags);
  }
  const list = $('tail-list');
  list.prepend(li);
  while (list.children.length > TAIL_KEEP) list.lastElementChild.remove();
}

function stopTail(message) {
  if (state.tail) {
    state.tail.abort();
    state.tail = null;
  }
  $('tail-stop').disabled = true;
  if (message) tailStatus(message);
}

/** Follows a channel through /admin/tail (server-sent events, read with fetch). */
async function startTail(channel) {
  stopTail();
  const controller = new AbortController();
  state.tail = controller;
  $('tail-list').replaceChildren();
  $('tail-stop').disabled = false;
  tailStatus(`Connecting to ${channel}…`);
  let received = 0;
  try {
    const response = await fetch(`/admin/tail?channel=${encodeURIComponent(channel)}`, {
      headers: { 'x-herald-admin': '1' },
      credentials: 'same-origin',
      signal: controller.signal,
    });
    if (response.status === 401) throw new SignedOut();
    if (!response.ok) {
      let message = `the node answered ${response.status}`;
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) message = body.error.message;
      } catch { /* the status says enough */ }
      throw new Error(message);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) name = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (!data) continue;
        let parsed = null;
        try { parsed = JSON.parse(data); } catch { continue; }
        if (name === 'open') {
          tailStatus(`Following ${channel}: waiting for publications.`, 'ok');
        } else if (name === 'publication') {
          received += 1;
          tailStatus(`Following ${channel}: ${number(received)} publication${received === 1 ? '' : 's'}.`, 'ok');
          addTailEntry(parsed);
        } else if (name === 'end') {
          stopTail();
          tailStatus(`Stopped: ${parsed.reason}`, 'error');
          return;
        }
      }
    }
    if (state.tail === controller) {
      stopTail();
      tailStatus('The node ended the tail (it may be restarting); follow again.', 'error');
    }
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof SignedOut) return signOut(false);
    stopTail();
    tailStatus(`Cannot follow ${channel}: ${error.message || error}`, 'error');
  }
}

// ---- publish ------------------------------------------------------------------------

async function publish(event) {
  event.preventDefault();
  const out = $('publish-result');
  const channel = $('publish-channel').value.trim();
  let data;
  try {
    data = JSON.parse($('publish-data').value);
  } catch (error) {
    out.className = 'error';
    out.textContent = `The data is not JSON: ${error.message}`;
    return;
  }
  try {
    const result = await call('publish', { channel, data });
    out.className = 'ok';
    out.textContent = result && result.offset
      ? `Published to ${channel} at offset ${result.offset} (epoch ${result.epoch}).`
      : `Published to ${channel}.`;
  } catch (error) {
    if (error instanceof SignedOut) return signOut(false);
    out.className = 'error';
    out.textContent = `Not published: ${error.message}`;
  }
}

// ---- session ------------------------------------------------------------------------

function every(ms, work) {
  const run = () => work().catch(handle);
  run();
  state.timers.push(setInterval(run, ms));
}

function showApp() {
  state.signedIn = true;
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  every(NODES_EVERY_MS, refreshNodes);
  every(CHANNELS_EVERY_MS, refreshChannels);
}

async function signOut(tellServer) {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  stopTail();
  state.signedIn = false;
  if (tellServer) {
    try {
      await fetch('/admin/logout', { method: 'POST', headers: { 'x-herald-admin': '1' }, credentials: 'same-origin' });
    } catch { /* the cookie ends by itself */ }
  }
  $('app').hidden = true;
  $('logout').hidden = true;
  $('summary').textContent = '';
  $('login').hidden = false;
  $('password').focus();
}

async function login(event) {
  event.preventDefault();
  const error = $('login-error');
  error.textContent = '';
  let response;
  try {
    response = await fetch('/admin/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-herald-admin': '1' },
      body: JSON.stringify({ password: $('password').value }),
      credentials: 'same-origin',
    });
  } catch {
    error.textContent = 'The node cannot be reached.';
    return;
  }
  if (response.ok) {
    $('password').value = '';
    showApp();
    return;
  }
  let message = `The node answered ${response.status}.`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch { /* keep the status */ }
  error.textContent = message.charAt(0).toUpperCase() + message.slice(1);
}

async function start() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => signOut(true));
  $('publish-form').addEventListener('submit', publish);
  $('tail-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const channel = $('tail-channel').value.trim();
    if (channel) startTail(channel);
  });
  $('tail-stop').addEventListener('click', () => stopTail('Stopped.'));
  $('channel-search').addEventListener('submit', (event) => {
    event.preventDefault();
    state.channelsPage = 0;
    refreshChannels().catch(handle);
  });
  $('channels-prev').addEventListener('click', () => { state.channelsPage -= 1; renderChannels(); });
  $('channels-next').addEventListener('click', () => { state.channelsPage += 1; renderChannels(); });
  try {
    await call('info');
    showApp();
  } catch (error) {
    if (error instanceof SignedOut) signOut(false);
    else {
      $('login').hidden = false;
      $('login-error').textContent = error.message;
    }
  }
}

start();
