"""Funding: settlement against the master position, history endpoints, schedule, admin.

The simulators here run on a ``TestClock``, so no real funding time (00:00, 08:00, 16:00
UTC) can slip into a test; signed requests carry the simulator's time as their timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ccxt
import pytest
import requests
from websockets.sync.client import connect

from pms.clock import TestClock
from pms.exchange.ccxt_factory import make_binanceusdm
from pms.sim.runner import SimServer
from tests.sim.conftest import BTC, Raw

D = Decimal
HOUR = 3_600_000
INTERVAL = 8 * HOUR
DAY = 24 * HOUR


def fee(amt: str, mark: str, rate: str) -> D:
    """The hand-calculated funding fee: -amt * mark * rate, half-even to 8 decimals."""
    return (-D(amt) * D(mark) * D(rate)).quantize(D("1e-8"))


@dataclass
class Env:
    sim: SimServer
    clock: TestClock
    raw: Raw
    ex: Any

    def get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        return self.raw.send("GET", path, params, timestamp=self.clock.ms())

    def public(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.raw.send("GET", path, params, signed=False).json()

    def wallet(self) -> D:
        return D(self.sim.admin("/sim/state")["balances"]["USDT"])

    def rate(self, symbol: str, rate: str) -> Any:
        return self.sim.admin("/sim/funding", {"symbol": symbol, "rate": rate})

    def settle(self) -> Any:
        return self.sim.admin("/sim/funding/settle", {})

    def advance(self, ms: int) -> None:
        self.sim.admin("/sim/clock", {"advanceMs": ms})

    def position(self, symbol: str, qty: str) -> None:
        self.sim.admin("/sim/positions/adjust", {"symbol": symbol, "qty": qty})


@pytest.fixture(scope="module")
def clocked() -> Iterator[tuple[SimServer, TestClock, Any]]:
    clock = TestClock(datetime(2026, 3, 1, 3, tzinfo=UTC))
    with SimServer(clock=clock, seed=7, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as sim:
        ex = make_binanceusdm(sim.url, sim.api_key, sim.secret, timeout_ms=5000)
        # ccxt's throttle waits in real time before it signs (income weighs 30): the stamp
        # would then run ahead of the frozen TestClock by more than Binance's 1 s allowance.
        ex.enableRateLimit = False
        ex.load_markets()
        yield sim, clock, ex


@pytest.fixture()
def env(clocked: tuple[SimServer, TestClock, Any]) -> Env:
    """A fresh simulator one hour after a funding time: 7 hours to the next one."""
    sim, clock, ex = clocked
    now = clock.ms()
    sim.admin("/sim/clock", {"advanceMs": (now // INTERVAL + 1) * INTERVAL + HOUR - now})
    sim.admin("/sim/reset", {})
    ex.load_time_difference()  # ccxt signs with the simulator's (frozen) time
    return Env(sim, clock, Raw(sim), ex)


def test_long_pays_and_short_receives_a_positive_rate_exactly(env: Env) -> None:
    env.ex.create_order(BTC, "market", "buy", 0.5)  # mark stays 60000 (walk paused)
    env.sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000.01"})
    env.position("ETHUSDT", "-0.123")
    assert env.rate("BTCUSDT", "0.0001") == {"symbol": "BTCUSDT", "rate": "0.00010000"}
    env.rate("ETHUSDT", "0.00012345")
    before = env.wallet()

    settled = env.settle()

    btc, eth = fee("0.5", "60000", "0.0001"), fee("-0.123", "3000.01", "0.00012345")
    assert (btc, eth) == (D("-3.00000000"), D("0.04555320"))  # 0.0455532018... rounded
    assert settled["fundingTime"] == env.clock.ms()
    assert settled["fees"] == {"BTCUSDT": "-3.00000000", "ETHUSDT": "0.04555320"}
    assert env.wallet() == before + btc + eth
    balance = env.get("/fapi/v2/balance").json()[0]
    assert D(balance["balance"]) == before + btc + eth


def test_negative_rate_pays_the_long_and_charges_the_short(env: Env) -> None:
    env.position("BTCUSDT", "0.5")
    env.position("ETHUSDT", "-0.123")
    env.sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000.01"})
    env.rate("BTCUSDT", "-0.0002")
    env.rate("ETHUSDT", "-0.0002")
    before = env.wallet()

    settled = env.settle()

    # 0.123 * 3000.01 * 0.0002 = 0.073800246: half-even to 8 decimals is ...25
    assert settled["fees"] == {"BTCUSDT": "6.00000000", "ETHUSDT": "-0.07380025"}
    assert env.wallet() == before + D("6") - D("0.07380025")
    index = env.public("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"})
    assert index["lastFundingRate"] == "-0.00020000"
    assert env.ex.fetch_funding_rate(BTC)["fundingRate"] == -0.0002


def test_flat_account_pays_nothing_but_the_history_records_the_rate(env: Env) -> None:
    env.rate("ETHUSDT", "0.00031")
    before = env.wallet()

    settled = env.settle()

    assert settled["fees"] == {}
    assert env.wallet() == before
    mark = env.sim.admin("/sim/state")["prices"]["ETHUSDT"]
    t = settled["fundingTime"]
    assert env.public("/fapi/v1/fundingRate") == [
        {"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": t,
         "markPrice": "60000.00000000"},
        {"symbol": "ETHUSDT", "fundingRate": "0.00031000", "fundingTime": t,
         "markPrice": format(D(mark).quantize(D("1e-8")), "f")},
    ]  # fmt: skip
    assert env.get("/fapi/v1/income").json() == []


def three_settlements(env: Env) -> list[int]:
    """A 1 BTC long settled at t0, t0 + 1 h, t0 + 2 h with rates 1, 2, 3 bp: fees -6, -12, -18."""
    env.position("BTCUSDT", "1")
    times = []
    for n in (1, 2, 3):
        env.rate("BTCUSDT", f"0.000{n}")
        times.append(env.settle()["fundingTime"])
        env.advance(HOUR)
    return times


def test_funding_rate_history_honours_window_and_limit(env: Env) -> None:
    t0, t1, t2 = three_settlements(env)

    def times(**params: Any) -> list[int]:
        return [r["fundingTime"] for r in env.public("/fapi/v1/fundingRate", params)]

    rows = env.public("/fapi/v1/fundingRate", {"symbol": "BTCUSDT"})
    assert [(r["fundingTime"], r["fundingRate"]) for r in rows] == [
        (t0, "0.00010000"), (t1, "0.00020000"), (t2, "0.00030000")
    ]  # fmt: skip
    assert times(symbol="BTCUSDT", startTime=t1) == [t1, t2]
    assert times(symbol="BTCUSDT", startTime=t0, limit=2) == [t0, t1]  # first from start
    assert times(symbol="BTCUSDT", limit=2) == [t1, t2]  # no start: the most recent
    assert times(symbol="BTCUSDT", endTime=t1) == [t0, t1]
    assert times(symbol="BTCUSDT", startTime=t1, endTime=t1) == [t1]
    assert times() == [t0, t0, t1, t1, t2, t2]  # every symbol, ascending
    for bad, code in (({"limit": 0}, -1130), ({"limit": 1001}, -1130),
                      ({"symbol": "NOPEUSDT"}, -1121), ({"startTime": "x"}, -1100)):  # fmt: skip
        assert env.public("/fapi/v1/fundingRate", bad)["code"] == code
    first = env.raw.send("GET", "/fapi/v1/fundingRate", signed=False)
    second = env.raw.send("GET", "/fapi/v1/fundingRate", signed=False)
    used = [int(r.headers["X-MBX-USED-WEIGHT-1M"]) for r in (first, second)]
    assert used[1] - used[0] == 1


def test_income_history_honours_window_page_and_type(env: Env) -> None:
    t0, t1, t2 = three_settlements(env)

    def incomes(**params: Any) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = env.get("/fapi/v1/income", params).json()
        return answer

    rows = incomes()
    assert [(r["time"], r["income"]) for r in rows] == [
        (t0, "-6.00000000"), (t1, "-12.00000000"), (t2, "-18.00000000")
    ]  # fmt: skip
    assert {k: v for k, v in rows[0].items() if k != "tranId"} == {
        "symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": "-6.00000000",
        "asset": "USDT", "info": "FUNDING_FEE", "time": t0, "tradeId": "",
    }  # fmt: skip
    ids = [r["tranId"] for r in rows]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(set(ids))
    assert [r["time"] for r in incomes(startTime=t1)] == [t1, t2]
    assert [r["time"] for r in incomes(endTime=t0)] == [t0]
    assert [r["time"] for r in incomes(limit=2, page=2)] == [t2]
    assert len(incomes(symbol="BTCUSDT", incomeType="FUNDING_FEE")) == 3
    assert incomes(symbol="ETHUSDT") == [] and incomes(incomeType="COMMISSION") == []
    for bad, code in (({"incomeType": "BOGUS"}, -1130), ({"limit": 1001}, -1130),
                      ({"page": 0}, -1130), ({"symbol": "NOPEUSDT"}, -1121)):  # fmt: skip
        assert env.get("/fapi/v1/income", bad).json()["code"] == code
    first, second = env.get("/fapi/v1/income"), env.get("/fapi/v1/income")
    used = [int(r.headers["X-MBX-USED-WEIGHT-1M"]) for r in (first, second)]
    assert used[1] - used[0] == 30
    # a signed route: no signature, or no API key, is refused
    unsigned = env.raw.send("GET", "/fapi/v1/income", signed=False)
    assert unsigned.status_code == 400 and unsigned.json()["code"] == -1102
    keyless = env.raw.send("GET", "/fapi/v1/income", timestamp=env.clock.ms(), key="")
    assert keyless.status_code == 401
    # without startTime/endTime: the last 7 days only
    env.advance(7 * DAY)  # t0..t2 are now older than 7 days; 21 funding times settle
    recent = incomes(limit=1000)
    assert len(recent) == 21 and all(r["time"] % INTERVAL == 0 for r in recent)
    assert all(r["time"] >= env.clock.ms() - 7 * DAY for r in recent)
    assert [r["time"] for r in incomes(startTime=t0, limit=3)] == [t0, t1, t2]


def test_ccxt_parses_funding_rate_and_funding_histories(env: Env) -> None:
    _, t1, t2 = three_settlements(env)

    rates = env.ex.fetch_funding_rate_history(BTC, t1, 1)

    assert [(r["symbol"], r["timestamp"], r["fundingRate"]) for r in rates] == [(BTC, t1, 0.0002)]
    env.ex.load_time_difference()
    paid = env.ex.fetch_funding_history(BTC, t1)
    assert [(p["symbol"], p["timestamp"], p["amount"], p["code"]) for p in paid] == [
        (BTC, t1, -12.0, "USDT"), (BTC, t2, -18.0, "USDT")
    ]  # fmt: skip
    assert all(p["id"].isdigit() for p in paid)


def test_user_stream_gets_a_funding_fee_account_update(env: Env) -> None:
    key = env.raw.send("POST", "/fapi/v1/listenKey", signed=False).json()["listenKey"]
    with connect(f"{env.sim.ws_url}/ws/{key}") as ws:
        env.position("BTCUSDT", "0.5")
        env.position("ETHUSDT", "-1")
        eth_mark = env.sim.admin("/sim/state")["prices"]["ETHUSDT"]

        settled = env.settle()

        got = []
        while len(got) < 2:
            msg = json.loads(ws.recv(timeout=3))
            if msg["e"] == "ACCOUNT_UPDATE" and msg["a"]["m"] == "FUNDING_FEE":
                got.append(msg)
    t = settled["fundingTime"]
    eth = fee("-1", eth_mark, "0.0001")
    wallet = env.wallet()
    after_btc = format(wallet - eth, "f")
    assert got[0] == {
        "e": "ACCOUNT_UPDATE", "E": t, "T": t,
        "a": {"m": "FUNDING_FEE", "P": [],
              "B": [{"a": "USDT", "wb": after_btc, "cw": after_btc, "bc": "-3.00000000"}]},
    }  # fmt: skip
    assert got[1]["a"]["B"] == [
        {"a": "USDT", "wb": format(wallet, "f"), "cw": format(wallet, "f"), "bc": format(eth, "f")}
    ]


def test_reset_clears_funding_and_income(env: Env) -> None:
    three_settlements(env)

    env.sim.admin("/sim/reset", {})

    assert env.public("/fapi/v1/fundingRate") == []
    assert env.get("/fapi/v1/income").json() == []
    assert env.sim.admin("/sim/state")["funding"]["rates"]["BTCUSDT"] == "0.00010000"


@pytest.mark.parametrize(
    "body",
    [
        {"symbol": "NOPEUSDT", "rate": "0.0001"},
        {"symbol": "BTCUSDT", "rate": "NaN"},
        {"symbol": "BTCUSDT", "rate": "Infinity"},
        {"symbol": "BTCUSDT", "rate": "0.5"},
        {"symbol": "BTCUSDT", "rate": "-0.0300001"},
        {"symbol": "BTCUSDT", "rate": "0.000000001"},  # 9 decimals: not settled as shown
        {"symbol": "BTCUSDT", "rate": 0.0001},  # a JSON number, not a decimal string
        {"symbol": "BTCUSDT", "rate": "abc"},
        {"symbol": "BTCUSDT"},
    ],
)
def test_bad_admin_rate_is_refused_and_changes_nothing(env: Env, body: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="400"):
        env.sim.admin("/sim/funding", body)

    assert env.sim.admin("/sim/state")["funding"]["rates"] == {
        "BTCUSDT": "0.00010000", "ETHUSDT": "0.00010000"
    }  # fmt: skip
    env.settle()
    assert {r["fundingRate"] for r in env.public("/fapi/v1/fundingRate")} == {"0.00010000"}


def test_rate_bounds_are_inclusive(env: Env) -> None:
    assert env.rate("BTCUSDT", "0.03")["rate"] == "0.03000000"
    assert env.rate("BTCUSDT", "-0.03")["rate"] == "-0.03000000"
    assert env.public("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"})["lastFundingRate"] == (
        "-0.03000000"
    )


def test_clock_settles_every_scheduled_time_and_nothing_before_the_start() -> None:
    clock = TestClock(datetime(2026, 3, 1, 5, 30, tzinfo=UTC))
    start = clock.ms()
    eight = (start // INTERVAL + 1) * INTERVAL  # 08:00 UTC
    with SimServer(clock=clock, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as sim:
        env = Env(sim, clock, Raw(sim), None)
        index = env.public("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"})
        assert index["nextFundingTime"] == eight
        env.position("BTCUSDT", "1")
        before = env.wallet()

        env.advance(eight - start - 1)  # 07:59:59.999
        assert env.public("/fapi/v1/fundingRate") == [] and env.wallet() == before

        env.advance(1 + 8 * HOUR + 30 * 60_000)  # 16:30: across 08:00 and 16:00 at once

        times = [r["fundingTime"] for r in env.public("/fapi/v1/fundingRate")]
        assert times == [eight, eight, eight + INTERVAL, eight + INTERVAL]
        assert all(t % INTERVAL == 0 for t in times)
        incomes = env.get("/fapi/v1/income").json()
        assert [(i["time"], i["income"]) for i in incomes] == [
            (eight, "-6.00000000"), (eight + INTERVAL, "-6.00000000")
        ]  # fmt: skip
        assert env.wallet() == before - 12
        index = env.public("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"})
        assert index["nextFundingTime"] == eight + 2 * INTERVAL
        assert sim.admin("/sim/state")["funding"]["nextFundingTime"] == eight + 2 * INTERVAL


def test_income_with_a_bad_signature_is_refused(env: Env) -> None:
    ex = make_binanceusdm(env.sim.url, env.sim.api_key, "wrong-secret")
    ex.load_markets()
    with pytest.raises(ccxt.AuthenticationError) as err:
        ex.fetch_funding_history(BTC)
    assert "-1022" in str(err.value)
