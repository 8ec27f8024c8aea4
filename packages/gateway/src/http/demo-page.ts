/**
 * GET /demo: a self-contained page (no build step, no external assets) to watch topics live and publish
 * from the browser. It uses the browser's own EventSource, so reconnects and Last-Event-ID are real.
 */
export const DEMO_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sse-gateway demo</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; max-width: 60rem; color: #222; }
  fieldset { border: 1px solid #ccc; border-radius: 6px; margin-bottom: 1rem; }
  input { font: inherit; padding: 0.2rem 0.4rem; }
  #log { font-family: ui-monospace, monospace; font-size: 12px; list-style: none; padding: 0; max-height: 50vh; overflow: auto; border: 1px solid #eee; }
  #log li { padding: 0.15rem 0.4rem; border-bottom: 1px solid #f3f3f3; white-space: pre-wrap; }
  #log li.reset { background: #fff3cd; }
  .status { font-weight: 600; }
  .status.open { color: #18794e; } .status.connecting { color: #b35900; } .status.closed { color: #b00020; }
</style>
</head>
<body>
<h1>sse-gateway demo</h1>
<fieldset>
  <legend>Subscribe</legend>
  <label>Topics (comma-separated) <input id="topics" value="clock"></label>
  <button id="connect">Connect</button>
  <button id="disconnect">Disconnect</button>
  <span>status: <span id="status" class="status closed">closed</span></span>
  <div>last event id: <code id="last-id">-</code> · events: <span id="count">0</span></div>
</fieldset>
<fieldset>
  <legend>Publish (needs a publish grant once auth is configured)</legend>
  <label>Topic <input id="pub-topic" value="clock"></label>
  <label>Event <input id="pub-event" value="message"></label>
  <label>Data <input id="pub-data" value="hello"></label>
  <button id="publish">Publish</button>
  <span id="pub-result"></span>
</fieldset>
<ul id="log"></ul>
<script>
(() => {
  const $ = (id) => document.getElementById(id);
  let source;
  let count = 0;
  const setStatus = () => {
    const state = !source ? 'closed' : ['connecting', 'open', 'closed'][source.readyState];
    $('status').textContent = state;
    $('status').className = 'status ' + state;
  };
  const show = (e, cls) => {
    count++;
    $('count').textContent = String(count);
    $('last-id').textContent = e.lastEventId || '-';
    const li = document.createElement('li');
    li.dataset.id = e.lastEventId;
    li.dataset.event = e.type;
    if (cls) li.className = cls;
    li.textContent = e.type + '  ' + e.data;
    $('log').prepend(li);
    while ($('log').children.length > 500) $('log').lastChild.remove();
  };
  const connect = () => {
    if (source) source.close();
    const params = new URLSearchParams();
    for (const t of $('topics').value.split(',').map((s) => s.trim()).filter(Boolean)) params.append('topic', t);
    source = new EventSource('events?' + params, { withCredentials: true });
    source.onopen = setStatus;
    source.onerror = setStatus;
    source.onmessage = (e) => show(e);
    source.addEventListener('gateway.reset', (e) => show(e, 'reset'));
    // Named events: EventSource only dispatches types someone listens to, so listen to what arrives.
    const known = new Set(['message', 'gateway.reset']);
    const listen = (type) => { if (!known.has(type)) { known.add(type); source.addEventListener(type, (e) => show(e)); } };
    for (const t of ['tick', 'price', 'update', 'chat']) listen(t);
    $('pub-event').addEventListener('change', () => listen($('pub-event').value));
    listen($('pub-event').value);
    setStatus();
  };
  setInterval(setStatus, 500);
  $('connect').onclick = connect;
  $('disconnect').onclick = () => { if (source) source.close(); setStatus(); };
  $('publish').onclick = async () => {
    const body = { topic: $('pub-topic').value, event: $('pub-event').value || 'message', data: $('pub-data').value };
    const response = await fetch('publish', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), credentials: 'include' });
    const json = await response.json().catch(() => ({}));
    $('pub-result').textContent = response.ok ? 'published ' + json.id : 'error: ' + (json.error ? json.error.message : response.status);
  };
  if (new URLSearchParams(location.search).has('autoconnect')) connect();
})();
</script>
</body>
</html>
`;
