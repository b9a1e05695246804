'use strict';
// Runs against real Redis and a real Python worker (`pms worker` from ../../.venv).
const { test, before, after } = require('node:test');
// Every test here talks to real processes: bound each one.
const T = { timeout: 30_000 };
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { spawn, execFileSync } = require('node:child_process');
const { randomUUID } = require('node:crypto');
const Redis = require('ioredis');
const { PmsClient, PmsTimeoutError, buildMessage } = require('../src');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const VENV_BIN = path.join(ROOT, '.venv', 'bin');
const REDIS_URL = process.env.PMS_REDIS_URL || 'redis://127.0.0.1:6379/0';
const RUN = `tn${randomUUID().slice(0, 8)}`;
const PREFIX = `${RUN}:`;
const NAMESPACE = RUN;
const ENV = { ...process.env, PMS_REDIS_URL: REDIS_URL, PMS_REDIS_PREFIX: PREFIX, PMS_DRAMATIQ_NAMESPACE: NAMESPACE };

let worker;
let client;
let admin;

async function waitForWorker(deadlineMs) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await client.send({ requestId: `boot-${randomUUID()}` }, { actor: 'ping', timeoutMs: 500 });
    } catch (err) {
      if (!(err instanceof PmsTimeoutError) || Date.now() > end) throw err;
    }
  }
}

before(async () => {
  assert.ok(fs.existsSync(path.join(VENV_BIN, 'pms')), `Python venv not found at ${VENV_BIN}`);
  worker = spawn(path.join(VENV_BIN, 'pms'), ['worker', '--processes', '1', '--threads', '2'], {
    cwd: ROOT, env: ENV, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  worker.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  worker.on('exit', (code) => { if (code) console.error(`worker exited ${code}\n${stderr}`); });
  client = new PmsClient({ redisUrl: REDIS_URL, prefix: PREFIX, namespace: NAMESPACE });
  admin = new Redis(REDIS_URL);
  await waitForWorker(30_000);
});

after(async () => {
  if (worker && worker.exitCode === null) {
    worker.kill('SIGTERM');
    await new Promise((r) => worker.once('exit', r));
  }
  await client.close();
  const keys = [...await admin.keys(`${RUN}:*`)];
  if (keys.length) await admin.del(...keys);
  await admin.quit();
});

test('ping round trip through a real worker', T, async () => {
  const requestId = `ping-${randomUUID()}`;
  const before = Date.now();
  const result = await client.send({ requestId }, { actor: 'ping', timeoutMs: 5000 });
  assert.equal(result.requestId, requestId);
  assert.equal(result.ok, true);
  assert.equal(result.data.pong, true);
  assert.ok(result.data.ts >= before - 5, 'engine timestamp is recent');
  // The result is also stored for later GETs.
  assert.deepEqual(await client.result(requestId), result);
});

test('a stored result is returned at once for a retried requestId', T, async () => {
  const requestId = `retry-${randomUUID()}`;
  const stored = { requestId, ok: true, data: { from: 'earlier' } };
  await admin.set(`${PREFIX}pms:result:${requestId}`, JSON.stringify(stored));
  const result = await client.send({ requestId }, { actor: 'ping', timeoutMs: 2000 });
  assert.deepEqual(result, stored);
});

test('on timeout the result key is read as a fallback (publish missed)', T, async () => {
  const requestId = `fallback-${randomUUID()}`;
  // No consumer on this queue: nobody publishes; the answer appears only as a key.
  const pending = client.send({ requestId }, { actor: 'ping', queue: 'pms.nobody', timeoutMs: 400 });
  setTimeout(() => {
    admin.set(`${PREFIX}pms:result:${requestId}`, JSON.stringify({ requestId, ok: true, data: { late: true } }));
  }, 100);
  const result = await pending;
  assert.deepEqual(result.data, { late: true });
});

test('no result at all rejects with a TIMEOUT error', T, async () => {
  const requestId = `lost-${randomUUID()}`;
  await assert.rejects(
    client.send({ requestId }, { actor: 'ping', queue: 'pms.nobody', timeoutMs: 200 }),
    (err) => err instanceof PmsTimeoutError && err.code === 'TIMEOUT' && err.requestId === requestId,
  );
});

test('Redis unreachable: send still rejects with TIMEOUT within its deadline', T, async () => {
  // A port nothing listens on: ioredis queues the commands and reconnects for ever; the
  // subscribe and the enqueue used to wait for it (about 10 s, then a MaxRetriesPerRequestError).
  const net = require('node:net');
  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = srv.address();
      srv.close(() => resolve(p));
    });
  });
  const offline = new PmsClient({ redisUrl: `redis://127.0.0.1:${port}/0`, prefix: PREFIX,
    namespace: NAMESPACE });
  const requestId = `offline-${randomUUID()}`;
  const started = Date.now();
  try {
    await assert.rejects(
      offline.send({ requestId }, { actor: 'ping', timeoutMs: 300 }),
      (err) => err instanceof PmsTimeoutError && err.requestId === requestId,
    );
    assert.ok(Date.now() - started < 2_000, `took ${Date.now() - started} ms`);
  } finally {
    offline.redis.disconnect();
    if (offline._sub) offline._sub.disconnect();
  }
});

test('a command no worker serves is answered, not left to time out', T, async () => {
  const requestId = `algo-${randomUUID()}`;
  const result = await client.send({ requestId, subAccountId: 1 }, { actor: 'start_chase', timeoutMs: 5000 });
  assert.equal(result.ok, false);
  assert.equal(result.error.code, 'VALIDATION_ERROR');
  assert.equal(result.error.details.actor, 'start_chase');
  assert.match(result.error.message, /not served by this version/);
});

test('enqueue writes the Dramatiq wire format in one MULTI', T, async () => {
  const message = await client.enqueue({ requestId: 'w1', userId: 'u1' }, { actor: 'deposit', queue: 'pms.wiretest' });
  const raw = await admin.hget(`${NAMESPACE}:pms.wiretest.msgs`, message.options.redis_message_id);
  const stored = JSON.parse(raw);
  assert.deepEqual(stored, message);
  assert.deepEqual(Object.keys(stored), ['queue_name', 'actor_name', 'args', 'kwargs', 'options', 'message_id', 'message_timestamp']);
  assert.notEqual(stored.message_id, stored.options.redis_message_id);
  assert.deepEqual(await admin.lrange(`${NAMESPACE}:pms.wiretest`, 0, -1), [message.options.redis_message_id]);
  assert.equal(buildMessage('deposit', {}).queue_name, 'pms.accounts');
  assert.throws(() => buildMessage('no_such_actor', {}), /unknown actor/);
});

function publishEvents(types) {
  const code = `
import sys, redis, structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from pms.clock import SystemClock
from pms.messaging.events import EventPublisher
pub = EventPublisher(redis.Redis.from_url(sys.argv[1]), SystemClock(), prefix=sys.argv[2])
for i, t in enumerate(sys.argv[3:]):
    print(pub.publish(t, "sa-1", {"n": i, "qty": "0.015"}))
`;
  const out = execFileSync(path.join(VENV_BIN, 'python'), ['-c', code, REDIS_URL, PREFIX, ...types], { cwd: ROOT, env: ENV });
  return out.toString().trim().split('\n');
}

async function take(iterator, n) {
  const got = [];
  for await (const item of iterator) {
    got.push(item);
    if (got.length === n) break;
  }
  return got;
}

test('events replay from a stream id, with a type filter', T, async () => {
  const ids = publishEvents(['order_update', 'trade_fill', 'order_update']);
  const all = await take(client.events({ fromId: '0' }), 3);
  assert.deepEqual(all.map((e) => e.id), ids);
  assert.deepEqual(all[1].event, { v: 1, type: 'trade_fill', ts: all[1].event.ts, subAccountId: 'sa-1', data: { n: 1, qty: '0.015' } });

  // A gateway that processed up to ids[2] reconnects: it gets exactly what it missed.
  const later = publishEvents(['balance_update', 'order_update']);
  const missed = await take(client.events({ fromId: ids[2] }), 2);
  assert.deepEqual(missed.map((e) => e.id), later);

  const onlyOrders = await take(client.events({ fromId: '0', types: ['order_update'] }), 3);
  assert.deepEqual(onlyOrders.map((e) => e.id), [ids[0], ids[2], later[1]]);
});

test('live events: fromId $ yields only new events; abort ends the iterator', T, async () => {
  const controller = new AbortController();
  const iterator = client.events({ signal: controller.signal, blockMs: 200 });
  try {
    const first = iterator.next();
    await new Promise((r) => setTimeout(r, 300));
    const [id] = publishEvents(['risk_update']);
    const { value } = await first;
    assert.equal(value.id, id);
    assert.equal(value.event.type, 'risk_update');
  } finally {
    controller.abort();
  }
  const end = await iterator.next();
  assert.equal(end.done, true);
});
