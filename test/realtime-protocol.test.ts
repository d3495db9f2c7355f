import type { Socket } from 'node:net';
import pg from 'pg';
import WebSocket from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../server/config.js';
import { signUp } from './auth-helpers.js';
import { request, startTestApp, type TestApp, useTestApp } from './helpers.js';
import { sleep, TestSocket } from './realtime-client.js';

const sockets: TestSocket[] = [];

/**
 * A heartbeat of 2 s for the shared apps: a client that misses two pings is dropped, and the
 * test process (server and clients alike) can stall for longer than a short one allows while
 * other files run beside it. The test of that drop has an app of its own with a short one.
 */
const env = {
  BASALT_REALTIME_HEARTBEAT_MS: '2000',
  BASALT_REALTIME_PRESENCE_HEARTBEAT_MS: '200',
  BASALT_REALTIME_SEND_BUFFER_BYTES: '65536',
};

async function open(app: TestApp, options: { token?: string } = {}): Promise<TestSocket> {
  const socket = await TestSocket.open(app.url, options);
  sockets.push(socket);
  return socket;
}

const one = useTestApp({ env });
// The slow-consumer test floods from `two`: its message budget is out of reach.
const two = useTestApp({ env: { ...env, BASALT_REALTIME_MESSAGES_PER_SECOND: '1000000' }, sharing: one });

afterAll(() => {
  for (const socket of sockets) socket.close();
});

describe('realtime protocol', () => {
  it('answers ping with pong', async () => {
    const socket = await open(one);
    socket.send({ type: 'ping' });
    expect(await socket.nextOfType('pong')).toEqual({ type: 'pong' });
  });

  it('answers malformed and unknown messages with an error frame and stays open', async () => {
    const socket = await open(one);
    socket.send('{"type": ');
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST' });
    socket.send('[1,2]');
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST' });
    socket.send({ type: 'launch_missiles' });
    expect((await socket.nextOfType('error')).message).toContain('Unknown message type');
    socket.send({ type: 'subscribe', id: 's1', collection: 'todos', docId: 'x' });
    const unknownField = await socket.nextOfType('error');
    expect(unknownField).toMatchObject({ code: 'INVALID_REQUEST', id: 's1' });
    expect(unknownField.message).toContain('docId');
    socket.send({ type: 'subscribe', id: 's2', collection: 'Not A Name' });
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST', id: 's2' });
    socket.send({ type: 'join', channel: '' });
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST' });
    socket.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST' });
    socket.send({ type: 'ping' });
    await socket.nextOfType('pong');
    expect(socket.closeCode).toBeNull();
  });

  it('closes the socket with 1009 on a frame over 64 KiB', async () => {
    const socket = await open(one);
    socket.send({ type: 'broadcast', channel: 'big', event: 'x', payload: 'x'.repeat(70 * 1024) });
    expect(await socket.waitClosed()).toBe(1009);
    const after = await open(one);
    after.send({ type: 'ping' });
    await after.nextOfType('pong');
  });

  it('rejects a forged token with an error frame and keeps the connection as the public caller', async () => {
    const socket = await open(one, { token: 'forged.token.value' });
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'UNAUTHENTICATED' });
    socket.send({ type: 'auth', access_token: 'also-forged' });
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'UNAUTHENTICATED' });
    socket.send({ type: 'auth', access_token: one.serviceKey });
    expect(await socket.nextOfType('authenticated')).toMatchObject({ role: 'service' });
    socket.send({ type: 'auth', access_token: 42 });
    expect(await socket.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST' });
  });

  it('drops messages over the rate limit with one RATE_LIMITED error, then serves again', async () => {
    const socket = await open(one);
    for (let i = 0; i < 400; i++) socket.send({ type: 'ping' });
    const limited = await socket.nextOfType('error');
    expect(limited.code).toBe('RATE_LIMITED');
    await sleep(300);
    const pongs = socket.all((frame) => frame.type === 'pong').length;
    expect(pongs).toBeGreaterThanOrEqual(200);
    expect(pongs).toBeLessThan(400);
    expect(socket.all((frame) => frame.type === 'error')).toHaveLength(1);
    await sleep(1_000);
    socket.send({ type: 'ping' });
    await socket.next((frame) => frame.type === 'pong' && socket.frames.indexOf(frame) > pongs, 2_000);
    expect(socket.closeCode).toBeNull();
  });

  it('drops a client that stops answering pings within two heartbeat intervals', async () => {
    const eager = await startTestApp(one.database, { ...env, BASALT_REALTIME_HEARTBEAT_MS: '300' });
    try {
      const url = `${eager.url.replace(/^http/, 'ws')}/v1/realtime`;
      const silent = new WebSocket(url, { autoPong: false });
      const closed = new Promise<number>((resolve) => silent.on('close', (code) => resolve(code)));
      await new Promise((resolve) => silent.once('open', resolve));
      const started = Date.now();
      await closed;
      expect(Date.now() - started).toBeLessThanOrEqual(2 * 300 + 250);

      const healthy = await open(eager);
      await sleep(1_000);
      healthy.send({ type: 'ping' });
      await healthy.nextOfType('pong');
    } finally {
      await eager.close();
    }
  });

  it('closes a consumer that does not read once its send buffer passes the threshold', async () => {
    // Its own app, with a heartbeat slow enough not to drop the paused client first.
    const patient = await startTestApp(one.database, { ...env, BASALT_REALTIME_HEARTBEAT_MS: '60000' });
    try {
      const slow = await open(patient);
      slow.send({ type: 'join', channel: 'flood' });
      await slow.nextOfType('joined');
      const sender = await open(two);
      sender.send({ type: 'join', channel: 'flood' });
      await sender.nextOfType('joined');
      // Stop reading at the TCP level: the server's writes pile up in its buffer.
      (slow.ws as unknown as { _socket: Socket })._socket.pause();
      const payload = 'y'.repeat(7_000);
      const slowConsumers = async () =>
        patient.app.platform.metrics.registry.getSingleMetricAsString('basalt_realtime_slow_consumers_total');
      for (let i = 0; i < 100 && / 0$/m.test(await slowConsumers()); i++) {
        for (let j = 0; j < 100; j++) sender.send({ type: 'broadcast', channel: 'flood', event: 'e', payload });
        await sleep(100);
      }
      expect(await slowConsumers()).toMatch(/basalt_realtime_slow_consumers_total [1-9]/);
      // The others are unaffected.
      sender.send({ type: 'ping' });
      await sender.nextOfType('pong');
    } finally {
      await patient.close();
    }
  }, 60_000);
});

describe('realtime configuration and metrics', () => {
  it('validates the realtime variables and names the bad one', () => {
    expect(loadConfig({}).realtime).toEqual({
      maxSubscriptions: 100,
      heartbeatMs: 30_000,
      sendBufferBytes: 4 * 1024 * 1024,
      authCheckMs: 1_000,
      presenceHeartbeatMs: 5_000,
      messagesPerSecond: 100,
      maxChannelsPerSocket: 100,
      aggregateIntervalMs: 250,
    });
    expect(loadConfig({ BASALT_REALTIME_MAX_CHANNELS_PER_SOCKET: '7' }).realtime.maxChannelsPerSocket).toBe(7);
    expect(loadConfig({ BASALT_REALTIME_AGGREGATE_INTERVAL_MS: '1000' }).realtime.aggregateIntervalMs).toBe(1000);
    expect(() => loadConfig({ BASALT_REALTIME_AGGREGATE_INTERVAL_MS: '0' })).toThrow(
      /BASALT_REALTIME_AGGREGATE_INTERVAL_MS/,
    );
    expect(() => loadConfig({ BASALT_REALTIME_MAX_CHANNELS_PER_SOCKET: '0' })).toThrow(
      /BASALT_REALTIME_MAX_CHANNELS_PER_SOCKET/,
    );
    expect(() => loadConfig({ BASALT_REALTIME_HEARTBEAT_MS: 'soon' })).toThrow(ConfigError);
    expect(() => loadConfig({ BASALT_REALTIME_MAX_SUBSCRIPTIONS: '0' })).toThrow(/BASALT_REALTIME_MAX_SUBSCRIPTIONS/);
  });

  it('exports the number of open realtime connections', async () => {
    const socket = await open(one);
    socket.send({ type: 'ping' });
    await socket.nextOfType('pong');
    const metrics = await request(one.url, 'GET', '/metrics', { token: one.serviceKey });
    expect(metrics.text).toMatch(/basalt_realtime_connections [1-9]/);
    expect(metrics.text).toContain('basalt_realtime_subscriptions');
  });
});

describe('channels', () => {
  it('delivers broadcasts to other members on both instances, not to the sender or non-members', async () => {
    const a = await open(one);
    const b = await open(two);
    const c = await open(two);
    const outsider = await open(one);
    for (const socket of [a, b, c]) {
      socket.send({ type: 'join', channel: 'room-1' });
      await socket.nextOfType('joined', { channel: 'room-1' });
    }
    a.send({ type: 'broadcast', channel: 'room-1', event: 'typing', payload: { who: 'a' } });
    expect(await b.nextOfType('broadcast')).toEqual({
      type: 'broadcast',
      channel: 'room-1',
      event: 'typing',
      payload: { who: 'a' },
    });
    expect(await c.nextOfType('broadcast')).toMatchObject({ payload: { who: 'a' } });
    await sleep(200);
    expect(a.all((frame) => frame.type === 'broadcast')).toHaveLength(0);
    expect(outsider.all((frame) => frame.type === 'broadcast')).toHaveLength(0);
  });

  it('requires joining before broadcasting and rejects payloads too large for a notification', async () => {
    const a = await open(one);
    a.send({ type: 'broadcast', channel: 'room-2', event: 'x', payload: 1 });
    expect(await a.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST', channel: 'room-2' });
    a.send({ type: 'join', channel: 'room-2' });
    await a.nextOfType('joined');
    a.send({ type: 'broadcast', channel: 'room-2', event: 'x', payload: 'z'.repeat(9_000) });
    expect(await a.nextOfType('error')).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', channel: 'room-2' });
    a.send({ type: 'ping' });
    await a.nextOfType('pong');
  });

  it('keeps presence across instances: state on join, joins, leaves on leave and on disconnect', async () => {
    const alice = await open(one);
    alice.send({ type: 'join', channel: 'lobby', presence: { name: 'alice' } });
    const aliceState = await alice.nextOfType('presence', { channel: 'lobby' });
    expect(aliceState.joins).toEqual([expect.objectContaining({ payload: { name: 'alice' } })]);
    const aliceRef = (await alice.nextOfType('joined')).presence_ref;

    const bob = await open(two);
    bob.send({ type: 'join', channel: 'lobby', presence: { name: 'bob' } });
    const bobState = await bob.next((frame) => frame.type === 'presence' && (frame.joins as unknown[]).length === 2);
    expect((bobState.joins as Array<{ payload: unknown }>).map((entry) => entry.payload)).toEqual(
      expect.arrayContaining([{ name: 'alice' }, { name: 'bob' }]),
    );
    const bobJoin = await alice.next(
      (frame) =>
        frame.type === 'presence' && (frame.joins as Array<{ payload: { name: string } }>)[0]?.payload.name === 'bob',
    );
    expect(bobJoin.leaves).toEqual([]);

    alice.send({ type: 'leave', channel: 'lobby' });
    await alice.nextOfType('left');
    const aliceLeft = await bob.next((frame) => frame.type === 'presence' && (frame.leaves as unknown[]).length > 0);
    expect(aliceLeft.leaves).toEqual([{ ref: aliceRef, key: expect.any(String), payload: { name: 'alice' } }]);

    const carol = await open(one);
    carol.send({ type: 'join', channel: 'lobby', presence: { name: 'carol' } });
    await carol.nextOfType('joined');
    await bob.next(
      (frame) =>
        frame.type === 'presence' && (frame.joins as Array<{ payload: { name: string } }>)[0]?.payload.name === 'carol',
    );
    carol.ws.terminate();
    const carolLeft = await bob.next(
      (frame) =>
        frame.type === 'presence' &&
        (frame.leaves as Array<{ payload: { name: string } }>)[0]?.payload.name === 'carol',
    );
    expect(carolLeft.joins).toEqual([]);
  });

  it('moves a presence to the user who signed in on the socket, for late joiners and for its leave', async () => {
    const dana = await open(one);
    dana.send({ type: 'join', channel: 'signin-room', presence: { name: 'dana' } });
    const first = await dana.nextOfType('presence', { channel: 'signin-room' });
    const publicKey = (first.joins as Array<{ key: string }>)[0]?.key;
    await dana.nextOfType('joined');

    const { user, session } = await signUp(one.url);
    if (!session) throw new Error('sign-up gave no session');
    dana.send({ type: 'auth', access_token: session.access_token });
    await dana.nextOfType('authenticated');
    dana.send({ type: 'join', channel: 'signin-room', presence: { name: 'dana' } });
    await dana.nextOfType('joined');
    expect(user.id).not.toBe(publicKey);

    // A late joiner on the other instance reads the presence from the database: the user's key.
    const late = await open(two);
    late.send({ type: 'join', channel: 'signin-room' });
    const state = await late.nextOfType('presence', { channel: 'signin-room' });
    expect(state.joins).toEqual([expect.objectContaining({ key: user.id, payload: { name: 'dana' } })]);

    dana.ws.terminate();
    const left = await late.next((frame) => frame.type === 'presence' && (frame.leaves as unknown[]).length > 0);
    expect(left.leaves).toEqual([expect.objectContaining({ key: user.id })]);
  });

  it('expires the presences of an instance that stopped beating', async () => {
    const watcher = await open(two);
    watcher.send({ type: 'join', channel: 'ghosts' });
    await watcher.nextOfType('joined');
    const client = new pg.Client({ connectionString: one.database.url });
    await client.connect();
    try {
      // An instance that died without cleaning up: its row and a presence stay behind.
      await client.query(
        `INSERT INTO basalt.realtime_instances (id, heartbeat_at) VALUES ('00000000-0000-4000-8000-000000000001', now())`,
      );
      await client.query(
        `INSERT INTO basalt.realtime_presence (ref, instance_id, channel, key, payload)
         VALUES ('00000000-0000-4000-8000-0000000000aa', '00000000-0000-4000-8000-000000000001', 'ghosts', 'g', '{"name":"ghost"}')`,
      );
      const late = await open(one);
      late.send({ type: 'join', channel: 'ghosts' });
      const state = await late.nextOfType('presence', { channel: 'ghosts' });
      expect(state.joins).toEqual([
        { ref: '00000000-0000-4000-8000-0000000000aa', key: 'g', payload: { name: 'ghost' } },
      ]);
      const left = await watcher.next(
        (frame) => frame.type === 'presence' && (frame.leaves as unknown[]).length > 0,
        5_000,
      );
      expect(left.leaves).toEqual([
        { ref: '00000000-0000-4000-8000-0000000000aa', key: 'g', payload: { name: 'ghost' } },
      ]);
      const remaining = await client.query(
        `SELECT count(*)::int AS n FROM basalt.realtime_presence WHERE channel = 'ghosts'`,
      );
      expect(remaining.rows[0]).toEqual({ n: 0 });
    } finally {
      await client.end();
    }
  });
});
