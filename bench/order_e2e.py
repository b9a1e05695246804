"""Market order end to end on the simulator, enqueue → result published (SPEC §10, second row).

Usage: ``.venv/bin/python bench/order_e2e.py [--rate 200] [--seconds 10] [--accounts 40]``

Everything real, nothing shared with the benchmark's own interpreter:

- ``pms sim`` in a subprocess (paused walk, BTCUSDT at 60000);
- a fresh Postgres database (created, migrated with ``pms.db.migrate.upgrade``, dropped at
  the end), a unique Redis prefix and Dramatiq namespace;
- the worker fleet ``python -m pms.cli.main worker --processes 2 --threads 8``;
- the streamer ``python -m pms.cli.main streamer`` (marks and quotes into Redis, the user
  stream: it books the fills, as in production). With ``--no-streamer`` a price writer stands
  in for its marks (``{prefix}pms:price:{symbol}`` every 100 ms) and the workers book the
  fills themselves (they ask the exchange for the order's trades);
- funded sub-accounts created through the ``create_sub_account`` and ``deposit`` commands;
- a subscriber process on ``{prefix}pms:results`` recording when each result is published.

The producer enqueues ``place_market_order`` (BTC, 0.002, alternating BUY/SELL per account so
margin never runs out) at a fixed rate, spread round-robin over the accounts. Latency is
``perf_counter_ns`` (CLOCK_MONOTONIC, comparable across processes on one host) from just
before the enqueue to the subscriber receiving the result.

After the run the bench waits until every order's fill is booked (the CPU figures include
the booking) and prints who booked them.

Baselines measured in the same run: a raw Redis round trip (``RPUSH`` → ``BLPOP`` in another
process) and a ``ping`` command round trip through the same workers (dispatch + runner +
result, no database, no exchange).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import orjson
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from _sim_proc import free_port, wait_port  # noqa: E402

REDIS_URL = os.environ.get("PMS_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get(
    "PMS_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
BTC = "BTC/USDT:USDT"
PRICES = {"BTCUSDT": "60000", "ETHUSDT": "3000"}


# ---------------------------------------------------------------- infrastructure
@contextmanager
def database(name: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def simulator(port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pms.sim.cli",
            "--port",
            str(port),
            "--seed",
            "7",
            "--paused",
            "--symbols",
            ",".join(PRICES),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        for symbol, price in PRICES.items():
            _admin(url, "/sim/price", {"symbol": symbol, "price": price})
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _admin(url: str, path: str, body: Any) -> Any:
    import urllib.request

    request = urllib.request.Request(
        url + path,
        data=orjson.dumps(body),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return orjson.loads(resp.read() or b"null")


@contextmanager
def worker_fleet(env: dict[str, str], processes: int, threads: int, log: str) -> Iterator[int]:
    args = ["worker", "--processes", str(processes), "--threads", str(threads)]
    with pms_process(args, env, log) as pid:
        yield pid


@contextmanager
def pms_process(args: list[str], env: dict[str, str], log: str) -> Iterator[int]:
    """``python -m pms.cli.main *args`` in its own process group, stopped with SIGTERM."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pms.cli.main", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _price_writer(prefix: str, stop: Any) -> None:
    """Stands in for the streamer: fresh marks/quotes in Redis, as ``pms:price:{symbol}``."""
    client = redis.Redis.from_url(REDIS_URL)
    while not stop.is_set():
        now = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        for exchange_id, price in PRICES.items():
            symbol = f"{exchange_id[:-4]}/USDT:USDT"
            pipe.set(
                f"{prefix}pms:price:{symbol}",
                orjson.dumps(
                    {"mark": price, "bid": price, "ask": price, "ts": now, "source": "stream"}
                ),
            )
        pipe.execute()
        stop.wait(0.1)


def _subscriber(channel: str, ready: Any, stop_key: str, conn: Any) -> None:
    """Records (requestId, ok, error code, receive time) for every published result."""
    client = redis.Redis.from_url(REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel, stop_key)
    ready.set()
    seen: list[tuple[str, bool, str, int]] = []
    for message in pubsub.listen():
        now = time.perf_counter_ns()
        if message["channel"].decode() == stop_key:
            break
        result = orjson.loads(message["data"])
        code = "" if result.get("ok") else result.get("error", {}).get("code", "?")
        seen.append((result["requestId"], bool(result.get("ok")), code, now))
    conn.send(seen)
    conn.close()


def _raw_consumer(key: str, out: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    while True:
        item = client.blpop([key], timeout=0)
        now = time.perf_counter_ns()
        assert item is not None
        if item[1] == b"stop":
            return
        client.rpush(out, now - int(item[1]))


# ---------------------------------------------------------------- measuring
class Producer:
    def __init__(self, namespace: str, channel: str) -> None:
        from pms.messaging import wire

        self.wire = wire
        self.client = redis.Redis.from_url(REDIS_URL)
        self.namespace = namespace
        self.channel = channel
        self.sent: dict[str, int] = {}
        ctx = multiprocessing.get_context("spawn")
        self.stop_key = f"{channel}:stop:{uuid.uuid4().hex[:6]}"
        ready = ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_subscriber, args=(channel, ready, self.stop_key, send))
        self.proc.start()
        ready.wait(10)
        time.sleep(0.2)

    def send(self, actor: str, command: dict[str, Any]) -> None:
        t = time.perf_counter_ns()
        self.sent[command["requestId"]] = t
        self.wire.send(
            self.client, self.namespace, actor, command, timestamp_ms=int(time.time() * 1000)
        )

    def call(self, actor: str, command: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Send and wait for the stored result (setup only, not measured)."""
        key = f"{self.channel.removesuffix('pms:results')}pms:result:{command['requestId']}"
        self.send(actor, command)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self.client.get(key)
            if raw is not None:
                result: dict[str, Any] = orjson.loads(raw)
                return result
            time.sleep(0.01)
        raise RuntimeError(f"no result for {actor} {command['requestId']}")

    def finish(self) -> list[tuple[str, bool, str, int]]:
        self.client.publish(self.stop_key, "stop")
        seen: list[tuple[str, bool, str, int]] = self.recv.recv()
        self.proc.join(10)
        return seen


def paced(rate: float, count: int, send: Any) -> float:
    """Call ``send(i)`` ``count`` times at ``rate``/s; returns the elapsed seconds."""
    interval = 1 / rate
    start = time.perf_counter()
    for i in range(count):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(i)
    return time.perf_counter() - start


def run_raw(rate: float, seconds: float) -> list[float]:
    client = redis.Redis.from_url(REDIS_URL)
    key = f"bench-raw-{uuid.uuid4().hex[:8]}"
    out = f"{key}:latencies"
    proc = multiprocessing.get_context("spawn").Process(target=_raw_consumer, args=(key, out))
    proc.start()
    try:
        time.sleep(0.5)
        n = int(rate * seconds)
        paced(rate, n, lambda _: client.rpush(key, time.perf_counter_ns()))
        deadline = time.monotonic() + 10
        while client.llen(out) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return [int(v) / 1e6 for v in client.lrange(out, 0, -1)]
    finally:
        client.rpush(key, "stop")
        proc.join(timeout=5)
        client.delete(key, out)


def cpu_times(db_name: str, fleet_pid: int, streamer_pid: int | None) -> dict[str, float]:
    """CPU seconds used so far by each part of the system, read from /proc: the worker fleet
    (the ``pms worker`` process and its descendants), the streamer, the Postgres backends of
    the bench database, the simulator, Redis and this process with its children."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[int(entry)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / tick)

    def descends_from(pid: int, root: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = procs[pid][0] if pid in procs else 0
        return False

    out: dict[str, float] = {}
    for pid, (_, cmd, used) in procs.items():
        if descends_from(pid, fleet_pid):
            group = "workers"
        elif streamer_pid is not None and descends_from(pid, streamer_pid):
            group = "streamer"
        elif "pms.sim.cli" in cmd:
            group = "simulator"
        elif descends_from(pid, os.getpid()):
            group = "bench"
        elif cmd.startswith("postgres:") and db_name in cmd:
            group = "postgres"
        elif cmd.startswith("redis-server"):
            group = "redis"
        else:
            continue
        out[group] = out.get(group, 0.0) + used
    return out


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": _pct(values, 50),
        "p90": _pct(values, 90),
        "p99": _pct(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def _row(name: str, values: list[float]) -> dict[str, float] | None:
    if not values:
        print(f"{name:30} no samples")
        return None
    s = _stats(values)
    print(
        f"{name:30} {len(values):>5} {s['p50']:>8.3f} {s['p90']:>8.3f} {s['p99']:>8.3f}"
        f" {s['max']:>8.3f} {s['mean']:>8.3f}"
    )
    return s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the order run")
    parser.add_argument("--accounts", type=int, default=40, help="funded sub-accounts")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--log", default="/tmp/pms-order-e2e-workers.log")
    parser.add_argument(
        "--no-streamer",
        action="store_true",
        help="no streamer: a price writer for the marks, fills booked by the workers",
    )
    args = parser.parse_args()

    from pms.config import load_settings
    from pms.db import migrate

    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-e2e-{run_id}:"
    namespace = f"bench-e2e-{run_id}"
    port = free_port()
    client = redis.Redis.from_url(REDIS_URL)
    with database(f"pms_bench_{run_id}") as db_url, simulator(port) as sim_url:
        settings = load_settings(
            database_url=db_url,
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            dramatiq_namespace=namespace,
            sim_url=sim_url,
        )
        migrate.upgrade(settings)
        env = os.environ | {
            "PMS_DATABASE_URL": db_url,
            "PMS_REDIS_URL": REDIS_URL,
            "PMS_REDIS_PREFIX": prefix,
            "PMS_DRAMATIQ_NAMESPACE": namespace,
            "PMS_SIM_URL": sim_url,
            "PMS_SIM_API_KEY": settings.sim_api_key,
            "PMS_EXCHANGE": "sim",
        }
        ctx = multiprocessing.get_context("spawn")
        stop_prices = ctx.Event()
        writer = ctx.Process(target=_price_writer, args=(prefix, stop_prices))
        try:
            with ExitStack() as stack:
                streamer_pid = None
                if args.no_streamer:
                    writer.start()
                else:
                    log = args.log.replace("workers", "streamer")
                    streamer_pid = stack.enter_context(pms_process(["streamer"], env, log))
                    wait_user_stream(client, prefix)
                fleet_pid = stack.enter_context(
                    worker_fleet(env, args.processes, args.threads, args.log)
                )
                db_name = f"pms_bench_{run_id}"
                cpu = lambda: cpu_times(db_name, fleet_pid, streamer_pid)  # noqa: E731
                result = measure(args, prefix, namespace, cpu, db_url)
        finally:
            stop_prices.set()
            if writer.pid is not None:
                writer.join(5)
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)
            for key in client.scan_iter(match=f"{namespace}*", count=1000):
                client.delete(key)
    return result


def wait_user_stream(client: redis.Redis, prefix: str, timeout: float = 30) -> None:
    """Until the streamer's user stream is connected (``pms:stream:user:live``)."""
    deadline = time.monotonic() + timeout
    while not client.exists(f"{prefix}pms:stream:user:live"):
        if time.monotonic() > deadline:
            raise RuntimeError("the streamer's user stream did not connect")
        time.sleep(0.1)


def wait_fills(
    db_url: str, request_ids: list[str], timeout: float = 30
) -> tuple[int, dict[str, int]]:
    """Until every order of ``request_ids`` is FILLED with its fills booked; returns how many
    are, and their fills by source (an order that took two levels has two)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    filled = text(
        "SELECT count(*) FROM orders WHERE request_id = ANY(:ids) AND status = 'FILLED'"
        " AND filled_qty = qty"
    )
    sources = text(
        "SELECT f.source, count(*) FROM fills f JOIN orders o ON o.id = f.order_id"
        " WHERE o.request_id = ANY(:ids) GROUP BY f.source"
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                done = int(conn.execute(filled, {"ids": request_ids}).scalar_one())
                if done >= len(request_ids) or time.monotonic() > deadline:
                    rows = conn.execute(sources, {"ids": request_ids})
                    return done, {str(k): int(v) for k, v in rows}
            time.sleep(0.2)
    finally:
        engine.dispose()


def measure(
    args: argparse.Namespace,
    prefix: str,
    namespace: str,
    cpu: Callable[[], dict[str, float]],
    db_url: str,
) -> int:
    producer = Producer(namespace, f"{prefix}pms:results")
    user = f"bench-{uuid.uuid4().hex[:6]}"

    # Readiness and setup (not measured): ping until the fleet answers, then accounts.
    deadline = time.monotonic() + 60
    while True:
        try:
            producer.call("ping", {"requestId": uuid.uuid4().hex}, timeout=2)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
    accounts: list[int] = []
    for i in range(args.accounts):
        created = producer.call(
            "create_sub_account",
            {"requestId": uuid.uuid4().hex, "userId": user, "name": f"bench-{i}"},
        )
        assert created["ok"], created
        sub = int(created["data"]["subAccountId"])
        funded = producer.call(
            "deposit",
            {"requestId": uuid.uuid4().hex, "userId": user, "subAccountId": sub, "amount": "10000"},
        )
        assert funded["ok"], funded
        accounts.append(sub)

    counter = {"n": 0}

    def order(_: int) -> None:
        i = counter["n"]
        counter["n"] += 1
        account = accounts[i % len(accounts)]
        side = "BUY" if (i // len(accounts)) % 2 == 0 else "SELL"
        producer.send(
            "place_market_order",
            {
                "requestId": f"o-{uuid.uuid4().hex}",
                "userId": user,
                "subAccountId": account,
                "symbol": BTC,
                "side": side,
                "qty": "0.002",
            },
        )

    # Warm-up: every worker process builds its engine graph, loads instruments, syncs time.
    warm = 2 * len(accounts)
    paced(50, warm, order)
    time.sleep(2)

    # Baseline 1: ping through the same workers.
    ping_ids: list[str] = []

    def ping(_: int) -> None:
        rid = f"p-{uuid.uuid4().hex}"
        ping_ids.append(rid)
        producer.send("ping", {"requestId": rid})

    paced(100, 300, ping)
    time.sleep(1)
    raw = run_raw(args.rate, 3)

    # The measured run.
    n = int(args.rate * args.seconds)
    order_ids_from = len(producer.sent)
    cpu_before = cpu()
    elapsed = paced(args.rate, n, order)
    order_ids = list(producer.sent)[order_ids_from:]
    # Wait for the backlog (if the fleet fell behind) until results stop coming for 10 s.
    results_key = f"{prefix}pms:result:"
    pending = set(order_ids)
    idle_since = time.monotonic()
    while pending and time.monotonic() - idle_since < 10:
        time.sleep(0.5)
        batch = list(pending)[:500]
        found = [
            rid
            for rid, v in zip(
                batch, producer.client.mget([results_key + r for r in batch]), strict=True
            )
            if v
        ]
        if found:
            pending.difference_update(found)
            idle_since = time.monotonic()
    booked_at = time.monotonic()
    booked, fills = wait_fills(db_url, order_ids)
    fills_wait = time.monotonic() - booked_at
    cpu_after = cpu()
    seen = producer.finish()

    by_id = {rid: (ok, code, t) for rid, ok, code, t in seen}
    ping_lat = [(by_id[r][2] - producer.sent[r]) / 1e6 for r in ping_ids if r in by_id]
    order_lat, errors, missing, last = [], 0, 0, 0
    codes: dict[str, int] = {}
    for rid in order_ids:
        got = by_id.get(rid)
        if got is None:
            missing += 1
            continue
        ok, code, t = got
        if not ok:
            errors += 1
            codes[code] = codes.get(code, 0) + 1
        order_lat.append((t - producer.sent[rid]) / 1e6)
        last = max(last, t)
    first = producer.sent[order_ids[0]]
    span = (last - first) / 1e9 if last else float("nan")

    print(
        f"\nmarket order end to end (enqueue → result published), {args.rate:g} orders/s for"
        f" {args.seconds:g} s, {len(accounts)} sub-accounts,"
        f" workers {args.processes}×{args.threads}"
    )
    print(
        f"{'':30} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}"
    )
    s = _row("place_market_order", order_lat)
    p = _row("ping command (baseline)", ping_lat)
    r = _row("raw Redis RPUSH→BLPOP (baseline)", raw)
    completed = len(order_lat)
    print(
        f"\norders sent {n} in {elapsed:.2f} s ({n / elapsed:.1f}/s); results {completed}"
        f" ({completed / span:.1f}/s from first enqueue to last result);"
        f" errors {errors}{' ' + str(codes) if codes else ''}; missing {missing}"
    )
    print(
        f"orders filled and booked {booked} of {n} ({sum(fills.values())} fills, by source:"
        f" {fills}); the last {fills_wait:.2f} s after the results were in"
    )
    used = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
    total = sum(used.values())
    if completed and total:
        parts = ", ".join(
            f"{k} {1000 * v / completed:.2f}"
            for k, v in sorted(used.items(), key=lambda kv: -kv[1])
        )
        print(
            f"CPU per order (ms, the run and its backlog, fills booked included): {parts};"
            f" total {1000 * total / completed:.2f} → the {os.cpu_count()} cores"
            f" saturate near {os.cpu_count() * completed / total:.0f} orders/s"
        )
    if s and p:
        print(
            f"ratio order / ping:            p50 ×{s['p50'] / p['p50']:.1f}   p99 ×{s['p99'] / p['p99']:.1f}"
        )
    if s and r:
        print(
            f"ratio order / raw Redis:       p50 ×{s['p50'] / r['p50']:.1f}   p99 ×{s['p99'] / r['p99']:.1f}"
        )
    met = bool(
        s
        and s["p50"] <= 5
        and s["p99"] <= 20
        and errors == 0
        and missing == 0
        and completed / span >= 200 * 0.99
        and args.rate >= 200
        and booked == n
    )
    sustained = bool(
        errors == 0
        and missing == 0
        and completed / span >= 200 * 0.99
        and args.rate >= 200
        and booked == n
    )
    fast = bool(s and s["p50"] <= 5 and s["p99"] <= 20)
    print(
        "SPEC §10 target p50 ≤ 5 ms, p99 ≤ 20 ms, ≥ 200 orders/s, zero errors:"
        f" {'MET' if met else 'NOT MET'}"
        f" (≥ 200/s sustained, zero errors: {'yes' if sustained else 'no'};"
        f" p50/p99 at {args.rate:g}/s: {'yes' if fast else 'no'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
