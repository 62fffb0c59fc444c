// relayhub dashboard: polls each instance's read-only feed once a second and draws the last two minutes.
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get('token') || '';
  const HISTORY = 120;
  const instances = new Map(); // origin -> { el, last, series: { connections, rate, lag } }
  let origins = [location.origin];

  const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

  function chart(canvas, values, color) {
    const ctx = canvas.getContext('2d');
    const w = (canvas.width = canvas.clientWidth * devicePixelRatio);
    const h = (canvas.height = canvas.clientHeight * devicePixelRatio);
    ctx.clearRect(0, 0, w, h);
    const max = Math.max(1, ...values);
    ctx.strokeStyle = color;
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = (i / (HISTORY - 1)) * w;
      const y = h - (v / max) * (h - 4) - 2;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  function card(origin) {
    const el = document.createElement('div');
    el.className = 'card instance';
    el.dataset.origin = origin;
    el.innerHTML = `
      <h2><span data-field="name">${origin}</span><span data-field="backplane"></span></h2>
      <div class="row">
        <div>connections<div class="figure" data-field="connections">-</div></div>
        <div>messages/s<div class="figure" data-field="rate">-</div></div>
        <div>reliable lag (s)<div class="figure" data-field="lag">-</div></div>
      </div>
      <div class="muted">connections</div><canvas class="chart" data-chart="connections"></canvas>
      <div class="muted">messages per second (sent + received)</div><canvas class="chart" data-chart="rate"></canvas>
      <div class="muted">reliable-lane lag (oldest unacked, s)</div><canvas class="chart" data-chart="lag"></canvas>
      <table>
        <tr><th>connections per hub</th><td data-field="hubs">-</td></tr>
        <tr><th>backplane endpoints</th><td data-field="endpoints">-</td></tr>
        <tr><th>instances on the broadcast channel</th><td data-field="peers">-</td></tr>
        <tr><th>possible gaps</th><td data-field="gaps">-</td></tr>
        <tr><th>reliable pending</th><td data-field="pending">-</td></tr>
        <tr><th>dead letters</th><td data-field="dead-letters">-</td></tr>
        <tr><th>outbox backlog</th><td data-field="outbox">-</td></tr>
      </table>`;
    document.getElementById('instances').append(el);
    const zeros = () => new Array(HISTORY).fill(0);
    return { el, last: undefined, series: { connections: zeros(), rate: zeros(), lag: zeros() } };
  }

  function set(el, field, text, cls) {
    const node = el.querySelector(`[data-field="${field}"]`);
    node.textContent = text;
    if (cls !== undefined) node.className = cls;
  }

  function push(series, value) {
    series.push(value);
    series.shift();
  }

  async function poll(origin) {
    let entry = instances.get(origin);
    if (!entry) {
      entry = card(origin);
      instances.set(origin, entry);
    }
    const { el } = entry;
    try {
      const res = await fetch(`${origin}/relayhub/api/stats`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      if (!res.ok) throw new Error(`feed answered ${res.status}`);
      const feed = await res.json();
      const s = feed.stats;
      for (const peer of feed.peers) if (!origins.includes(peer)) origins.push(peer);
      const sum = (f) => s.hubs.reduce((n, h) => n + f(h), 0);
      const connections = sum((h) => h.connections);
      const messages = sum((h) => h.received + Object.values(h.sent).reduce((a, b) => a + b, 0));
      const lag = Math.max(0, ...s.hubs.map((h) => (h.reliable ? h.reliable.lagSeconds : 0)));
      const rate = entry.last
        ? ((messages - entry.last.messages) * 1000) / Math.max(1, s.time - entry.last.time)
        : 0;
      entry.last = { messages, time: s.time };
      push(entry.series.connections, connections);
      push(entry.series.rate, rate);
      push(entry.series.lag, lag);
      set(el, 'name', `${feed.instanceId} (${origin})`);
      set(
        el,
        'backplane',
        `${s.backplane.kind}: ${s.backplane.status}`,
        s.backplane.status === 'ready' ? 'up' : 'down',
      );
      set(el, 'connections', String(connections));
      set(el, 'rate', fmt(rate, 1));
      set(el, 'lag', fmt(lag, 1));
      set(
        el,
        'endpoints',
        s.backplane.endpoints.map((e) => `${e.endpoint} ${e.up ? 'up' : 'DOWN'}`).join(', '),
        s.backplane.endpoints.every((e) => e.up) ? 'up' : 'down',
      );
      set(
        el,
        'peers',
        Object.entries(s.backplane.instances)
          .map(([h, n]) => `${h}: ${n}`)
          .join(', ') || '-',
      );
      set(el, 'hubs', s.hubs.map((h) => `${h.hub}: ${h.connections}`).join(', ') || '-');
      set(el, 'gaps', String(s.backplane.possibleGaps));
      set(el, 'pending', String(sum((h) => (h.reliable ? h.reliable.pending : 0))));
      set(el, 'dead-letters', String(sum((h) => (h.reliable ? h.reliable.deadLetters : 0))));
      set(
        el,
        'outbox',
        feed.outbox ? `${feed.outbox.rows} rows, oldest ${fmt(feed.outbox.oldestSeconds, 1)} s` : '-',
      );
      el.classList.remove('unreachable');
    } catch (error) {
      set(el, 'backplane', `unreachable (${error.message})`, 'down');
      el.classList.add('unreachable');
      push(entry.series.connections, 0);
      push(entry.series.rate, 0);
      push(entry.series.lag, 0);
    }
    chart(el.querySelector('[data-chart="connections"]'), entry.series.connections, '#1a73e8');
    chart(el.querySelector('[data-chart="rate"]'), entry.series.rate, '#137333');
    chart(el.querySelector('[data-chart="lag"]'), entry.series.lag, '#b06000');
  }

  async function tick() {
    await Promise.all(origins.map(poll));
    const up = [...instances.values()].filter((i) => !i.el.classList.contains('unreachable')).length;
    document.getElementById('summary').textContent =
      `${up} of ${instances.size} instance(s) reachable · updated ${new Date().toLocaleTimeString()}`;
  }

  void tick();
  setInterval(tick, 1000);
})();
