// relayhub demo page: the official @microsoft/signalr browser client, chat over PUB/SUB and order updates
// over the reliable lane. It knows every demo instance and fails over to the next one when its instance dies.
/* global signalR */
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const user = params.get('user') || 'alice';
  const state = { token: '', instances: [location.origin], current: 0, connection: undefined, room: '' };
  const seen = new Set();
  const orders = { received: 0, duplicates: 0, offsets: [] };
  $('user').textContent = user;

  const setStatus = (text) => {
    const el = $('status');
    el.textContent = text;
    el.className = `status ${text}`;
  };
  const base = () => state.instances[state.current];

  async function token() {
    const res = await fetch(`/demo/token?user=${encodeURIComponent(user)}`);
    if (!res.ok) throw new Error(`token endpoint answered ${res.status}`);
    return (await res.json()).token;
  }

  async function info(origin) {
    const res = await fetch(`${origin}/demo/info`);
    return res.json();
  }

  function build() {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${base()}/hubs/demo`, { accessTokenFactory: () => state.token })
      .configureLogging(signalR.LogLevel.Warning)
      .build();
    connection.on('message', (from, text) => {
      const li = document.createElement('li');
      li.innerHTML = '<span class="from"></span>: <span class="text"></span>';
      li.querySelector('.from').textContent = from;
      li.querySelector('.text').textContent = text;
      $('chat-log').append(li);
    });
    // note: returning acknowledges the message; the meta argument carries its id and offset.
    connection.on('orderStatus', (order, meta) => {
      if (seen.has(meta.messageId)) {
        orders.duplicates++;
      } else {
        seen.add(meta.messageId);
        orders.received++;
        orders.offsets.push(meta.offset);
        const li = document.createElement('li');
        li.dataset.offset = String(meta.offset);
        li.textContent = `#${meta.offset} order ${order.orderId}: ${order.status} (via ${state.instanceLabel})`;
        $('orders').append(li);
      }
      summarize();
      return true;
    });
    connection.onclose(() => {
      if (state.connection === connection) void failover();
    });
    return connection;
  }

  function summarize() {
    const offsets = [...orders.offsets].sort((a, b) => a - b);
    const missing = [];
    for (let i = 1; i < offsets.length; i++) {
      for (let o = offsets[i - 1] + 1; o < offsets[i]; o++) missing.push(o);
    }
    $('order-summary').textContent =
      `received ${orders.received} (offsets ${offsets[0] ?? '-'}..${offsets.at(-1) ?? '-'}), ` +
      `missing: ${missing.length === 0 ? 'none' : missing.join(', ')}, duplicates dropped: ${orders.duplicates}`;
  }

  async function connect() {
    setStatus(state.connection ? 'reconnecting' : 'connecting');
    // note: which instance this is, before start(): the inbox replay may begin as soon as it resolves.
    const about = await info(base());
    state.instanceLabel = about.instanceId;
    const connection = build();
    state.connection = connection;
    await connection.start();
    $('instance').textContent = `${about.instanceId} (${base()})`;
    $('transport').textContent = '';
    $('kill-hint').innerHTML =
      `To see the reliable lane at work: <code>kill ${about.pid}</code> stops this instance.`;
    if (state.room) await connection.invoke('JoinGroup', state.room);
    setStatus('connected');
  }

  async function failover() {
    setStatus('reconnecting');
    for (let attempt = 0; ; attempt++) {
      state.current = (state.current + 1) % state.instances.length;
      try {
        await connect();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt)));
      }
    }
  }

  $('join-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const room = $('room').value.trim();
    if (!room) return;
    if (state.room && state.room !== room) await state.connection.invoke('LeaveGroup', state.room);
    await state.connection.invoke('JoinGroup', room);
    state.room = room;
    $('joined').textContent = `in ${room}`;
  });

  $('chat-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = $('chat-input').value.trim();
    if (!text || !state.room) return;
    await state.connection.invoke('SendToGroup', state.room, text);
    $('chat-input').value = '';
  });

  $('order-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const orderId = $('order-id').value.trim();
    const res = await fetch(`${base()}/api/orders/${encodeURIComponent(orderId)}/status`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${state.token}` },
      body: JSON.stringify({ userId: user, status: $('order-status').value }),
    });
    if (!res.ok) $('order-summary').textContent = `POST answered ${res.status}: ${await res.text()}`;
  });

  (async () => {
    try {
      const about = await info(location.origin);
      state.instances = about.instances && about.instances.length > 0 ? about.instances : [location.origin];
      state.current = Math.max(0, state.instances.indexOf(location.origin));
      state.token = await token();
      await connect();
    } catch (error) {
      setStatus('disconnected');
      $('transport').textContent = String(error);
      void failover();
    }
  })();
})();
