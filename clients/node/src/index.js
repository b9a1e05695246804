'use strict';
/**
 * PMS gateway client: enqueue commands as standard Dramatiq messages on Redis, await their
 * results, and read engine events (with replay after a reconnect).
 *
 * Wire format: see docs/wire-format.md at the repository root.
 */
const { randomUUID } = require('node:crypto');
const Redis = require('ioredis');

/** SPEC §3.2: queue of every gateway command. */
const ACTOR_QUEUES = Object.freeze({
  ...Object.fromEntries(
    ['ping', 'place_market_order', 'place_limit_order', 'cancel_order', 'cancel_all_orders',
      'close_position', 'set_leverage'].map((a) => [a, 'pms.trading'])),
  ...Object.fromEntries(
    ['create_sub_account', 'deposit', 'withdraw', 'update_risk_rules', 'freeze_sub_account',
      'unfreeze_sub_account'].map((a) => [a, 'pms.accounts'])),
  ...Object.fromEntries(
    ['start_chase', 'cancel_chase', 'start_scalper', 'cancel_scalper', 'start_twap', 'pause_twap',
      'resume_twap', 'cancel_twap', 'start_trail_stop', 'cancel_trail_stop', 'place_basket',
      'cancel_basket'].map((a) => [a, 'pms.algo'])),
});

const EVENT_TYPES = Object.freeze([
  'order_update', 'trade_fill', 'position_update', 'balance_update', 'risk_update',
  'margin_call', 'liquidation', 'algo_update', 'position_drift', 'stream_status',
]);

class PmsTimeoutError extends Error {
  constructor(requestId, timeoutMs) {
    super(`no result for ${requestId} within ${timeoutMs} ms`);
    this.name = 'PmsTimeoutError';
    this.code = 'TIMEOUT';
    this.requestId = requestId;
  }
}

function queueFor(actor) {
  const queue = ACTOR_QUEUES[actor];
  if (!queue) throw new Error(`unknown actor ${JSON.stringify(actor)}: pass {queue}`);
  return queue;
}

/**
 * The Dramatiq message for `command`, field for field what Python's Dramatiq writes.
 * `message_id` is a fresh uuid (not the requestId: a retried requestId must be a distinct
 * message for Dramatiq's in-flight bookkeeping); `options.redis_message_id` another fresh uuid.
 */
function buildMessage(actor, command, { queue, messageId, now = Date.now } = {}) {
  return {
    queue_name: queue || queueFor(actor),
    actor_name: actor,
    args: [command],
    kwargs: {},
    options: { redis_message_id: randomUUID() },
    message_id: messageId || randomUUID(),
    message_timestamp: now(),
  };
}

class PmsClient {
  /**
   * @param {object} [opts]
   * @param {string} [opts.redisUrl]   default redis://127.0.0.1:6379/0
   * @param {string} [opts.prefix]     the engine's PMS_REDIS_PREFIX (results and events keys)
   * @param {string} [opts.namespace]  the engine's PMS_DRAMATIQ_NAMESPACE (default "dramatiq")
   * @param {number} [opts.timeoutMs]  default send timeout (10 s)
   */
  constructor({ redisUrl = 'redis://127.0.0.1:6379/0', prefix = '', namespace = 'dramatiq',
    timeoutMs = 10_000 } = {}) {
    this.redisUrl = redisUrl;
    this.prefix = prefix;
    this.namespace = namespace;
    this.timeoutMs = timeoutMs;
    this.resultsChannel = `${prefix}pms:results`;
    this.eventsStream = `${prefix}pms:events`;
    this.redis = new Redis(redisUrl, { lazyConnect: false });
    this.redis.on('error', () => {}); // ioredis reconnects by itself; commands fail or retry
    this._sub = null;
    this._subscribed = null;
    this._waiters = new Map(); // requestId -> Set<{resolve}>
    this._closed = false;
  }

  resultKey(requestId) {
    return `${this.prefix}pms:result:${requestId}`;
  }

  _subscribe() {
    if (!this._subscribed) {
      const sub = new Redis(this.redisUrl);
      sub.on('error', () => {});
      sub.on('message', (channel, payload) => this._onResult(payload));
      // After a reconnect, results published while we were away are only in the keys.
      sub.on('ready', () => { if (this._waiters.size) this._recheckAll(); });
      this._sub = sub;
      this._subscribed = sub.subscribe(this.resultsChannel).catch((err) => {
        this._subscribed = null;
        sub.disconnect();
        throw err;
      });
    }
    return this._subscribed;
  }

  _onResult(payload) {
    let result;
    try { result = JSON.parse(payload); } catch { return; }
    const waiters = result && this._waiters.get(result.requestId);
    if (!waiters) return;
    this._waiters.delete(result.requestId);
    for (const w of waiters) w.resolve(result);
  }

  async _recheckAll() {
    for (const requestId of [...this._waiters.keys()]) {
      const raw = await this.redis.get(this.resultKey(requestId)).catch(() => null);
      if (raw) this._onResult(raw);
    }
  }

  /**
   * Enqueue a command without waiting; resolves with the message written.
   * MULTI: HSET ns:Q.msgs, RPUSH ns:Q (what stock Dramatiq writes).
   */
  async enqueue(command, { actor, queue, messageId } = {}) {
    const message = buildMessage(actor, command, { queue, messageId });
    await this._enqueueMulti(this.redis.multi(), message).exec().then(checkExec);
    return message;
  }

  _enqueueMulti(multi, message) {
    const q = `${this.namespace}:${message.queue_name}`;
    const rid = message.options.redis_message_id;
    return multi
      .hset(`${q}.msgs`, rid, JSON.stringify(message))
      .rpush(q, rid);
  }

  /**
   * Send `command` to `actor` and resolve with its result
   * (`{requestId, ok, data}` or `{requestId, ok:false, error:{code,message,details}}`).
   * Subscribes to results before enqueueing; checks `pms:result:{requestId}` in the same MULTI
   * as the enqueue (a retried requestId may already have its answer) and again on timeout.
   * Rejects with PmsTimeoutError (code TIMEOUT) when no result arrives within timeoutMs, Redis
   * unreachable included (subscribing and enqueueing count against the same deadline; a
   * command whose enqueue timed out may still reach the engine once Redis is back: retry it
   * with the same requestId, which never runs twice).
   */
  async send(command, { actor, timeoutMs = this.timeoutMs, queue } = {}) {
    if (!command || typeof command.requestId !== 'string' || !command.requestId) {
      throw new TypeError('command.requestId (a non-empty string) is required');
    }
    if (!actor) throw new TypeError('actor is required');
    const { requestId } = command;
    const message = buildMessage(actor, command, { queue });
    const deadline = Date.now() + timeoutMs;
    const within = (promise) => {
      promise.catch(() => {}); // settled later, after the deadline: not an unhandled rejection
      let timer;
      const expired = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new PmsTimeoutError(requestId, timeoutMs)),
          Math.max(0, deadline - Date.now()));
      });
      return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
    };
    await within(this._subscribe());

    let waiter;
    const arrived = new Promise((resolve) => { waiter = { resolve }; });
    if (!this._waiters.has(requestId)) this._waiters.set(requestId, new Set());
    this._waiters.get(requestId).add(waiter);
    const forget = () => {
      const set = this._waiters.get(requestId);
      if (set) { set.delete(waiter); if (!set.size) this._waiters.delete(requestId); }
    };

    try {
      const multi = this.redis.multi().get(this.resultKey(requestId));
      const replies = checkExec(await within(this._enqueueMulti(multi, message).exec()));
      if (replies[0]) return JSON.parse(replies[0]);

      let timer;
      const timedOut = new Promise((resolve) => {
        timer = setTimeout(resolve, Math.max(0, deadline - Date.now()), null);
      });
      const result = await Promise.race([arrived, timedOut]);
      clearTimeout(timer);
      if (result) return result;
      // The GET fallback, bounded too: Redis may be what kept the answer away.
      const lookup = this.redis.get(this.resultKey(requestId));
      lookup.catch(() => {});
      let graceTimer;
      const grace = new Promise((resolve) => { graceTimer = setTimeout(resolve, 250, null); });
      const raw = await Promise.race([lookup, grace]).finally(() => clearTimeout(graceTimer));
      if (raw) return JSON.parse(raw);
      throw new PmsTimeoutError(requestId, timeoutMs);
    } finally {
      forget();
    }
  }

  /** The stored result of `requestId`, or null. */
  async result(requestId) {
    const raw = await this.redis.get(this.resultKey(requestId));
    return raw ? JSON.parse(raw) : null;
  }

  /**
   * Async iterator over engine events from the `pms:events` stream: yields `{id, event}`.
   * `fromId`: '$' (default) = only new events; '0' = everything kept; any stream id = the events
   * after it (replay what a reconnecting gateway missed: pass the last id it processed).
   * `types`: only these event types. `signal`: an AbortSignal that ends the iteration.
   * Survives Redis reconnects: it resumes from the last id it yielded.
   */
  async *events({ types, fromId = '$', blockMs = 1000, count = 500, signal } = {}) {
    const wanted = types ? new Set(types) : null;
    const conn = this.redis.duplicate();
    conn.on('error', () => {});
    const stop = () => conn.disconnect();
    if (signal) {
      if (signal.aborted) return;
      signal.addEventListener('abort', stop, { once: true });
    }
    try {
      let lastId = fromId;
      if (lastId === '$') {
        // Pin '$' to a concrete id so events between two XREADs are never skipped.
        const last = await conn.xrevrange(this.eventsStream, '+', '-', 'COUNT', 1);
        lastId = last.length ? last[0][0] : '0-0';
      }
      while (!this._closed && !(signal && signal.aborted)) {
        let reply;
        try {
          reply = await conn.xread('COUNT', count, 'BLOCK', blockMs, 'STREAMS', this.eventsStream, lastId);
        } catch (err) {
          if (this._closed || (signal && signal.aborted)) return;
          await new Promise((r) => setTimeout(r, 200));
          continue;
        }
        if (!reply) continue;
        for (const [, entries] of reply) {
          for (const [id, fields] of entries) {
            lastId = id;
            const idx = fields.indexOf('event');
            if (idx < 0) continue;
            let event;
            try { event = JSON.parse(fields[idx + 1]); } catch { continue; }
            if (wanted && !wanted.has(event.type)) continue;
            yield { id, event };
          }
        }
      }
    } finally {
      if (signal) signal.removeEventListener('abort', stop);
      conn.disconnect();
    }
  }

  async close() {
    this._closed = true;
    for (const c of [this._sub, this.redis]) {
      if (c) { try { await c.quit(); } catch { c.disconnect(); } }
    }
  }
}

function checkExec(replies) {
  if (!replies) throw new Error('MULTI aborted');
  return replies.map(([err, value]) => { if (err) throw err; return value; });
}

module.exports = { PmsClient, PmsTimeoutError, ACTOR_QUEUES, EVENT_TYPES, buildMessage, queueFor };
