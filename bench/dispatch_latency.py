"""Dispatch latency: enqueue → actor start, at a steady 200 commands/s (SPEC §10, first row).

Usage: ``.venv/bin/python bench/dispatch_latency.py [--rate 200] [--seconds 8]``

Three consumers on one Redis, each with its own namespace, each a real worker subprocess
(1 process × 4 threads) except the baseline. (a) and (c) run at the same time and are fed in
turns (``--slice``, 1 s each, alternating until each got ``--seconds``), so a shared machine
that speeds up or slows down during the run moves both alike rather than one; (b) runs
alone afterwards:

(a) ``FastRedisBroker`` (pms.messaging.broker): the producer writes the gateway's MULTI
    (HSET + RPUSH in one MULTI), the actor records ``perf_counter_ns() - t_enqueue``;
(b) stock Dramatiq ``RedisBroker`` with default settings (polling consumer, backoff to 1 s);
(c) baseline: a raw Redis list round trip, RPUSH → BLPOP in another process.

``time.perf_counter_ns`` is CLOCK_MONOTONIC on Linux, comparable across processes on one host.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REDIS_URL = os.environ.get("PMS_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench"


# ---------------------------------------------------------------- worker side (imported by dramatiq)
def _define_worker() -> None:
    import dramatiq

    ns = os.environ["BENCH_NS"]
    out = os.environ["BENCH_OUT"]
    if os.environ["BENCH_BROKER"] == "fast":
        from pms.config import load_settings
        from pms.messaging.broker import build_broker

        broker: Any = build_broker(load_settings(redis_url=REDIS_URL, dramatiq_namespace=ns))
    else:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=REDIS_URL, namespace=ns)
    dramatiq.set_broker(broker)
    client = redis.Redis.from_url(REDIS_URL)

    @dramatiq.actor(queue_name=QUEUE, max_retries=0)
    def tick(command: dict[str, Any]) -> None:
        started = time.perf_counter_ns()
        client.rpush(out, started - command["t"])

    globals()["tick"] = tick


if os.environ.get("BENCH_ROLE") == "worker":
    _define_worker()


def _raw_consumer(key: str, out: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    while True:
        item = client.blpop([key], timeout=0)
        now = time.perf_counter_ns()
        assert item is not None
        if item[1] == b"stop":
            return
        client.rpush(out, now - int(item[1]))


# ---------------------------------------------------------------- driver
def _start_worker(kind: str, ns: str, out: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BENCH_ROLE": "worker",
        "BENCH_BROKER": kind,
        "BENCH_NS": ns,
        "BENCH_OUT": out,
        "PYTHONPATH": ROOT,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "dispatch_latency",
            "--path",
            HERE,
            "-p",
            "1",
            "-t",
            "4",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _paced(rate: float, seconds: float, send: Any) -> None:
    interval = 1 / rate
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = start + i * interval
        while (delay := due - time.perf_counter()) > 0:
            time.sleep(delay if delay > 0.002 else 0)
        send(time.perf_counter_ns())


def _collect(client: redis.Redis, out: str, expected: int, timeout: float = 10) -> list[float]:
    deadline = time.monotonic() + timeout
    while client.llen(out) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return [int(v) / 1e6 for v in client.lrange(out, 0, -1)]


def _wait_ready(client: redis.Redis, out: str, send: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        send(time.perf_counter_ns())
        time.sleep(0.2)
        if client.llen(out):
            time.sleep(1.0)  # let the consumer settle back to idle
            client.delete(out)
            return
    raise RuntimeError("worker did not start")


@dataclass
class Target:
    """A consumer under test: how to send it one stamp, and how to collect its latencies."""

    send: Callable[[int], object]
    collect: Callable[[int], list[float]]


@contextmanager
def dramatiq_target(kind: str) -> Iterator[Target]:
    from pms.messaging import wire

    client = redis.Redis.from_url(REDIS_URL)
    ns = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    out = f"{ns}:latencies"
    if kind == "fast":

        def send(t: int) -> None:
            wire.send(
                client, ns, "tick", {"t": t}, timestamp_ms=int(time.time() * 1000), queue_name=QUEUE
            )
    else:
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.message import Message

        producer = RedisBroker(url=REDIS_URL, namespace=ns)
        producer.declare_queue(QUEUE)

        def send(t: int) -> None:
            producer.enqueue(
                Message(
                    queue_name=QUEUE, actor_name="tick", args=({"t": t},), kwargs={}, options={}
                )
            )

    proc = _start_worker(kind, ns, out)
    try:
        _wait_ready(client, out, send)
        yield Target(send, lambda n: _collect(client, out, n))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for key in client.scan_iter(match=f"{ns}*", count=1000):
            client.delete(key)


@contextmanager
def raw_target() -> Iterator[Target]:
    import multiprocessing

    client = redis.Redis.from_url(REDIS_URL)
    key = f"bench-raw-{uuid.uuid4().hex[:8]}"
    out = f"{key}:latencies"
    proc = multiprocessing.get_context("spawn").Process(target=_raw_consumer, args=(key, out))
    proc.start()
    try:
        _wait_ready(client, out, lambda t: client.rpush(key, t))
        yield Target(lambda t: client.rpush(key, t), lambda n: _collect(client, out, n))
    finally:
        client.rpush(key, "stop")
        proc.join(timeout=5)
        client.delete(key, out)


def interleaved(
    targets: dict[str, Target], rate: float, seconds: float, slice_s: float
) -> dict[str, list[float]]:
    """Feed each target ``rate``/s for ``seconds`` in all, taking turns slice by slice."""
    slices = max(1, round(seconds / slice_s))
    per_slice = seconds / slices
    for _ in range(slices):
        for target in targets.values():
            _paced(rate, per_slice, target.send)
    expected = int(rate * per_slice) * slices
    return {name: target.collect(expected) for name, target in targets.items()}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="commands per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each run")
    parser.add_argument(
        "--slice", type=float, default=1.0, help="seconds per turn of pms and the raw baseline"
    )
    args = parser.parse_args()

    with dramatiq_target("fast") as fast, raw_target() as raw:
        paired = interleaved({"pms": fast, "raw": raw}, args.rate, args.seconds, args.slice)
    with dramatiq_target("stock") as stock:
        alone = interleaved({"stock": stock}, args.rate, args.seconds, args.seconds)
    runs = {
        "pms FastRedisBroker": paired["pms"],
        "stock Dramatiq RedisBroker": alone["stock"],
        "raw Redis RPUSH→BLPOP": paired["raw"],
    }
    slices = max(1, round(args.seconds / args.slice))
    expected = int(args.rate * args.seconds / slices) * slices
    print(
        f"\ndispatch latency, enqueue → actor start, {args.rate:g} commands/s for {args.seconds:g} s"
    )
    print(
        f"{'':28} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}"
    )
    stats: dict[str, dict[str, float]] = {}
    for name, values in runs.items():
        if not values:
            print(f"{name:28} no samples")
            continue
        s = {
            "p50": _pct(values, 50),
            "p90": _pct(values, 90),
            "p99": _pct(values, 99),
            "max": max(values),
            "mean": statistics.fmean(values),
        }
        stats[name] = s
        lost = "" if len(values) == expected else f"  ({expected - len(values)} missing)"
        print(
            f"{name:28} {len(values):>5} {s['p50']:>8.3f} {s['p90']:>8.3f} {s['p99']:>8.3f}"
            f" {s['max']:>8.3f} {s['mean']:>8.3f}{lost}"
        )
    fast, stock, raw = (stats.get(k) for k in runs)
    if fast and raw:
        print(
            f"\nratio pms / raw baseline:   p50 ×{fast['p50'] / raw['p50']:.1f}   p99 ×{fast['p99'] / raw['p99']:.1f}"
        )
    if fast and stock:
        print(
            f"ratio stock / pms:          p50 ×{stock['p50'] / fast['p50']:.1f}   p99 ×{stock['p99'] / fast['p99']:.1f}"
        )
    if fast:
        ok = fast["p50"] <= 0.5 and fast["p99"] <= 2.0
        print(f"SPEC §10 target p50 ≤ 0.5 ms, p99 ≤ 2 ms: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
