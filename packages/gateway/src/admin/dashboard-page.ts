/**
 * GET /dashboard on the admin listener: one self-contained page (no build step, no CDN) that follows
 * /admin/stream with the browser's EventSource and redraws the cluster once a second. Element ids are
 * stable: the browser test reads them.
 */
export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'";

export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sse-gateway dashboard</title>
<style>
  :root { --fg: #1d2330; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; --warn: #b45309; --bad: #b91c1c; --ok: #15803d; }
  body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem 2rem; color: var(--fg); background: #fafbfc; }
  h1 { font-size: 1.3rem; margin: 0 0 0.2rem; } h2 { font-size: 1rem; margin: 0 0 0.6rem; }
  .sub { color: var(--muted); margin-bottom: 1.2rem; }
  .tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(9.5rem, 1fr)); gap: 0.8rem; margin-bottom: 1.2rem; }
  .tile, .panel { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 0.7rem 0.9rem; }
  .tile .value { font-size: 1.6rem; font-weight: 650; font-variant-numeric: tabular-nums; }
  .tile .label { color: var(--muted); font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.04em; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(24rem, 1fr)); gap: 0.8rem; margin-bottom: 0.8rem; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--muted); font-weight: 500; font-size: 0.8rem; }
  td.num, th.num { text-align: right; }
  canvas { width: 100%; height: 140px; display: block; }
  .ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
  #status { font-weight: 600; }
  .empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<h1>sse-gateway</h1>
<div class="sub">node <code id="node-id">-</code> · stream <span id="status" class="warn">connecting</span> · updated <span id="updated">-</span></div>
<div class="tiles">
  <div class="tile"><div class="value" id="total-nodes">-</div><div class="label">nodes</div></div>
  <div class="tile"><div class="value" id="total-connections">-</div><div class="label">connections</div></div>
  <div class="tile"><div class="value" id="deliveries-rate">-</div><div class="label">deliveries/s</div></div>
  <div class="tile"><div class="value" id="received-rate">-</div><div class="label">events in/s</div></div>
  <div class="tile"><div class="value" id="publishes-rate">-</div><div class="label">HTTP publishes/s</div></div>
  <div class="tile"><div class="value" id="redis-health">-</div><div class="label">engine</div></div>
  <div class="tile"><div class="value" id="node-connections">-</div><div class="label">this node</div></div>
</div>
<div class="grid">
  <div class="panel"><h2>Deliveries/s (cluster)</h2><canvas id="chart-deliveries" width="600" height="140"></canvas></div>
  <div class="panel"><h2>Events in/s (fan-out input, summed over nodes)</h2><canvas id="chart-received" width="600" height="140"></canvas></div>
</div>
<div class="grid">
  <div class="panel"><h2>Nodes</h2>
    <table><thead><tr><th>id</th><th class="num">connections</th><th class="num">topics</th><th class="num">uptime</th><th>state</th><th class="num">report age</th></tr></thead>
    <tbody id="nodes"></tbody></table></div>
  <div class="panel"><h2>Busiest topics</h2>
    <table><thead><tr><th>topic</th><th class="num">consumers</th></tr></thead><tbody id="topics"></tbody></table></div>
</div>
<div class="grid">
  <div class="panel"><h2>Disconnect reasons (this node)</h2><table><tbody id="disconnects"></tbody></table></div>
  <div class="panel"><h2>Replays and resets (this node)</h2><table><tbody id="replays"></tbody></table></div>
</div>
<script>
const $ = (id) => document.getElementById(id);
const HISTORY = 60;
const series = { deliveries: [], received: [] };
let previous = new Map();

function text(id, value) { $(id).textContent = String(value); }
function cell(value, numeric) { const td = document.createElement('td'); td.textContent = String(value); if (numeric) td.className = 'num'; return td; }
function rows(id, list, empty) {
  const body = $(id);
  body.replaceChildren();
  if (list.length === 0) { const tr = document.createElement('tr'); const td = cell(empty); td.className = 'empty'; td.colSpan = 6; tr.append(td); body.append(tr); return; }
  for (const cells of list) { const tr = document.createElement('tr'); tr.append(...cells); body.append(tr); }
}
function uptime(s) { return s < 120 ? s + ' s' : s < 7200 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h'; }

/** Rates from two reports of the same node (counters are monotonic per node; a restarted node starts over). */
const COUNTERS = ['eventsDelivered', 'eventsReceived', 'eventsPublished'];
function rates(nodes) {
  const sum = [0, 0, 0];
  const next = new Map();
  for (const node of nodes) {
    const at = Date.parse(node.reportedAt);
    const before = previous.get(node.id);
    const counts = COUNTERS.map((name) => node[name]);
    let rate = [0, 0, 0];
    if (before && at === before.at) rate = before.rate; // no new report yet: keep its last rate
    else if (before && at > before.at && counts.every((count, i) => count >= before.counts[i])) {
      rate = counts.map((count, i) => (count - before.counts[i]) / ((at - before.at) / 1000));
    }
    next.set(node.id, { at, counts, rate });
    rate.forEach((value, i) => { sum[i] += value; });
  }
  previous = next;
  return { deliveries: sum[0], received: sum[1], publishes: sum[2] };
}

function draw(id, values) {
  const canvas = $(id), g = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height, max = Math.max(1, ...values);
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#e5e7eb'; g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
  g.fillStyle = '#6b7280'; g.font = '11px system-ui'; g.fillText(Math.round(max).toLocaleString(), 4, 12);
  if (values.length < 2) return;
  g.strokeStyle = '#2563eb'; g.lineWidth = 2; g.beginPath();
  values.forEach((v, i) => { const x = (i / (HISTORY - 1)) * w, y = h - 4 - (v / max) * (h - 20); i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke();
}

function render(frame) {
  text('node-id', frame.node);
  text('node-connections', frame.connections);
  text('updated', new Date(frame.at).toLocaleTimeString());
  const cluster = frame.cluster;
  if (cluster.error) { text('redis-health', 'unavailable'); $('redis-health').className = 'value bad'; return; }
  text('total-nodes', cluster.nodes.length);
  text('total-connections', cluster.connections);
  const ready = cluster.nodes.every((n) => n.engineReady);
  text('redis-health', ready ? 'ready' : 'degraded');
  $('redis-health').className = 'value ' + (ready ? 'ok' : 'bad');
  const rate = rates(cluster.nodes);
  text('deliveries-rate', Math.round(rate.deliveries).toLocaleString());
  text('received-rate', Math.round(rate.received).toLocaleString());
  text('publishes-rate', Math.round(rate.publishes).toLocaleString());
  series.deliveries.push(rate.deliveries); series.received.push(rate.received);
  for (const list of Object.values(series)) while (list.length > HISTORY) list.shift();
  draw('chart-deliveries', series.deliveries); draw('chart-received', series.received);
  rows('nodes', cluster.nodes.map((n) => {
    const state = cell(n.draining ? 'draining' : n.engineReady ? 'ready' : 'engine down');
    state.className = n.draining ? 'warn' : n.engineReady ? 'ok' : 'bad';
    return [cell(n.id), cell(n.connections, true), cell(n.topics, true), cell(uptime(n.uptimeS), true), state, cell(n.reportAgeMs + ' ms', true)];
  }), 'no node has reported yet');
  rows('topics', cluster.busiestTopics.map((t) => [cell(t.topic), cell(t.consumers, true)]), 'no topic has consumers');
  const c = frame.counters;
  rows('disconnects', Object.entries(c.disconnects).sort((a, b) => b[1] - a[1]).map(([reason, n]) => [cell(reason), cell(n, true)]), 'no disconnects yet');
  rows('replays', [
    [cell('resumed connections'), cell(c.replays, true)],
    [cell('events replayed'), cell(c.replayedEvents, true)],
    ...Object.entries(c.resets).map(([reason, n]) => [cell('resets: ' + reason), cell(n, true)]),
    [cell('write timeouts'), cell(c.writeTimeouts, true)],
  ], '');
}

const source = new EventSource('/admin/stream');
source.addEventListener('open', () => { text('status', 'live'); $('status').className = 'ok'; });
source.addEventListener('error', () => { text('status', 'reconnecting'); $('status').className = 'warn'; });
source.addEventListener('stats', (event) => render(JSON.parse(event.data)));
</script>
</body>
</html>
`;
