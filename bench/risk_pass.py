"""Risk pass (SPEC §10): 10,000 positions in 2,000 sub-accounts re-evaluated on a mark change
in ≤ 50 ms, including writing every ``pms:risk:{id}`` snapshot to Redis.

Usage: ``.venv/bin/python bench/risk_pass.py [--accounts 2000] [--per-account 5] [--symbols 20]``

Synthetic books (5 positions per account over 20 symbols, realistic BTC-style brackets) are
installed in a real :class:`pms.riskengine.monitor.RiskMonitor` talking to the local Redis.
Two passes are timed:

* all symbols' marks change at once: every account and every position is re-evaluated;
* one symbol's mark changes: only its holders are.

Each round moves every mark by up to ±0.1% (a random walk); accounts whose ratio moved by a
material amount also get a ``risk_update`` event, published within the timed pass. The first
pass after start-up publishes one for every account whose ratio is at least 0.01 (the monitor
starts from ratio 0), so it is also shown on its own: it sets the all-marks p99 at 30 rounds.

Baselines measured in the same run: a bare loop computing ``qty·(mark − entry)`` over the
same positions (the least any pass must do), and one redis-py pipeline of as many SETs of a
snapshot of the same size (the usual way to write them; the monitor's framed MSETs cost less).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Iterable
from decimal import Decimal

import orjson
import redis

from pms.clock import SystemClock
from pms.domain.enums import AccountStatus, LiquidationMode, Tier
from pms.domain.instrument import Instrument, LeverageBracket
from pms.messaging.events import Event, EventPublisher
from pms.risk.snapshot import RiskPosition
from pms.risk.tiers import DEFAULT_THRESHOLDS
from pms.riskengine.books import AccountBook
from pms.riskengine.monitor import RiskMonitor

D = Decimal
BRACKETS = (
    (125, "0", "50000", "0.004", "0"),
    (100, "50000", "600000", "0.005", "50"),
    (75, "600000", "3000000", "0.0065", "950"),
    (50, "3000000", "12000000", "0.01", "11450"),
    (25, "12000000", "70000000", "0.02", "131450"),
)


def instrument(i: int) -> Instrument:
    symbol = f"S{i}/USDT:USDT"
    brackets = tuple(
        LeverageBracket(n + 1, lev, D(lo), D(hi), D(mmr), D(cum))
        for n, (lev, lo, hi, mmr, cum) in enumerate(BRACKETS)
    )
    one = D("0.001")
    return Instrument(
        symbol,
        f"S{i}USDT",
        f"S{i}",
        "USDT",
        D("0.01"),
        one,
        one,
        D(1000),
        one,
        one,
        D(1000),
        D(5),
        D("0.01"),
        D(10**7),
        True,
        brackets,
    )


def books(
    rng: random.Random, accounts: int, per_account: int, instruments: list[Instrument]
) -> list[AccountBook]:
    out = []
    for a in range(accounts):
        held = rng.sample(instruments, per_account)
        positions = {}
        for inst in held:
            qty = D(rng.randint(1, 2000)) / 1000 * (1 if rng.random() < 0.5 else -1)
            positions[inst.symbol] = RiskPosition(
                inst.symbol, qty, D(rng.randint(90_000, 110_000)) / 10, rng.choice((5, 10, 20))
            )
        out.append(
            AccountBook(
                a + 1,
                D(rng.randint(5_000, 50_000)),
                AccountStatus.ACTIVE,
                Tier.NORMAL,
                LiquidationMode.CLOSE,
                DEFAULT_THRESHOLDS,
                positions,
                [],
            )
        )
    return out


class CountingPublisher(EventPublisher):
    """Counts the events the timed passes publish."""

    published = 0

    def publish_many(self, events: Iterable[Event]) -> list[str]:
        batch = list(events)
        self.published += len(batch)
        return super().publish_many(batch)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--per-account", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    rng = random.Random(7)
    instruments = [instrument(i) for i in range(args.symbols)]
    by_symbol = {i.symbol: i for i in instruments}
    client = redis.Redis.from_url(args.redis)
    prefix = f"bench-risk-{uuid.uuid4().hex[:8]}:"
    clock = SystemClock()
    enforced: list[int] = []
    publisher = CountingPublisher(client, clock, prefix=prefix)
    monitor = RiskMonitor(
        client,
        None,
        lambda: by_symbol,
        publisher,
        clock,
        lambda sub, _r: enforced.append(sub),
        prefix=prefix,
    )  # type: ignore[arg-type]
    installed = books(rng, args.accounts, args.per_account, instruments)
    monitor.marks = {i.symbol: D(10_000) for i in instruments}
    monitor.install(installed)
    positions = sum(len(b.positions) for b in installed)

    all_times, one_times, evaluated_all, evaluated_one = [], [], 0, 0
    events = []  # published by each all-marks pass
    for r in range(args.rounds):
        # A mark tick: each symbol moves up to ±0.1% (a random walk, as marks do).
        marks = {
            s: (m * (1 + D(rng.randint(-10, 10)) / 10_000)).quantize(D("0.01"))
            for s, m in monitor.marks.items()
        }
        before = publisher.published
        t0 = time.perf_counter()
        evaluated_all = monitor.on_marks(marks)
        all_times.append((time.perf_counter() - t0) * 1000)
        events.append(publisher.published - before)
        one = instruments[r % len(instruments)].symbol
        t0 = time.perf_counter()
        evaluated_one = monitor.on_marks({one: marks[one] + D("0.5")})
        one_times.append((time.perf_counter() - t0) * 1000)

    # Baseline 1: the bare arithmetic over the same positions.
    flat = [(p.qty, p.entry, p.symbol) for b in installed for p in b.positions.values()]
    marks = monitor.marks
    bare = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        total = D(0)
        for qty, entry, symbol in flat:
            total += qty * (marks[symbol] - entry)
        bare.append((time.perf_counter() - t0) * 1000)
    # Baseline 2: one pipelined round trip writing as many snapshots of the same size.
    sample = client.get(f"{prefix}pms:risk:1") or orjson.dumps({})
    writes = []
    for _ in range(args.rounds):
        pipe = client.pipeline(transaction=False)
        t0 = time.perf_counter()
        for a in range(args.accounts):
            pipe.set(f"{prefix}bench:{a}", sample)
        pipe.execute()
        writes.append((time.perf_counter() - t0) * 1000)

    base = statistics.median(bare) + statistics.median(writes)
    p50_all = statistics.median(all_times)
    print(
        f"risk pass: {args.accounts} sub-accounts, {positions} positions, {args.symbols} symbols, {args.rounds} rounds"
    )
    print(f"{'':38}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print(
        f"{'all marks change (' + str(evaluated_all) + ' accounts)':38}{p50_all:9.2f}{pct(all_times, 0.99):9.2f}{max(all_times):9.2f}"
    )
    later = all_times[1:] or all_times
    print(
        f"{'  first pass (' + str(events[0]) + ' risk_update)':38}{all_times[0]:9.2f}{'':9}{'':9}"
    )
    print(
        f"{'  later passes (' + str(sum(events[1:])) + ' risk_update)':38}{statistics.median(later):9.2f}{pct(later, 0.99):9.2f}{max(later):9.2f}"
    )
    print(
        f"{'one mark changes (' + str(evaluated_one) + ' accounts)':38}{statistics.median(one_times):9.2f}{pct(one_times, 0.99):9.2f}{max(one_times):9.2f}"
    )
    print(
        f"{'baseline: bare uPnL loop':38}{statistics.median(bare):9.2f}{pct(bare, 0.99):9.2f}{max(bare):9.2f}"
    )
    print(
        f"{'baseline: pipelined snapshot writes':38}{statistics.median(writes):9.2f}{pct(writes, 0.99):9.2f}{max(writes):9.2f}"
    )
    print(f"ratio full pass / (bare loop + writes) at p50: x{p50_all / base:.1f}")
    verdict = "MET" if p50_all <= 50 else "NOT MET"
    print(
        f"SPEC §10 target: {positions} positions in {args.accounts} sub-accounts <= 50 ms (p50): {verdict}"
    )
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        client.delete(key)


if __name__ == "__main__":
    main()
