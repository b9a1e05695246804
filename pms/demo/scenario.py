"""The story ``pms demo`` tells, one checked step at a time.

Three sub-accounts of one desk: **carol** trades (a market buy, a resting limit sell that a
price move fills), **alice** (liquidation mode ``close``) and **bob** (``takeover``) each hold a
50x BTC long. The price falls until both get a margin call, then through their liquidation
level: alice's position is market-closed on the exchange, bob's moves to the house account.
Every step waits for what a gateway would see (a result, an event) and the liquidations are
also checked in Postgres; any step that does not happen stops the demo with exit code 1.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TextIO

import orjson
import redis
from sqlalchemy import Engine, create_engine, select

from pms.config import Settings
from pms.db.models import LiquidationEvent, Position, SubAccount
from pms.demo.client import DemoError, Events, Gateway, Simulator
from pms.demo.summary import Member, account_summary
from pms.marketdata.prices import price_key

D = Decimal
BTC = "BTC/USDT:USDT"
BTC_ID = "BTCUSDT"
#: BTCUSDT's first leverage bracket (notional < 50,000): the demo's positions stay inside it.
MMR = D("0.004")
TICK = D("0.1")
START_PRICE = D("60000")
LIMIT_PRICE = D("60600")
RALLY_PRICE = D("60700")


def mark_for_ratio(wallet: D, qty: D, entry: D, ratio: D) -> D:
    """The mark at which one long reaches ``ratio`` = Q·m·MMR / (W + Q·(m − E))."""
    return (ratio * (qty * entry - wallet) / (qty * (ratio - MMR))).quantize(TICK)


class Scenario:
    def __init__(self, settings: Settings, out: TextIO, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.out = out
        self.timeout = timeout
        self.client = redis.Redis.from_url(settings.redis_url)
        self.gateway = Gateway(settings, self.client)
        self.events = Events(settings, self.client)
        self.sim = Simulator(settings.sim_url)
        self.db: Engine = create_engine(settings.database_url, pool_size=1)
        self.user = f"demo-{uuid.uuid4().hex[:8]}"
        self.members: dict[str, Member] = {}
        self.step_no = 0
        self.started = time.monotonic()

    STEPS = 12

    # -- narration -------------------------------------------------------------------------

    def step(self, text: str, action: Callable[[], str]) -> None:
        self.step_no += 1
        self.out.write(f"[{self.step_no:>2}/{self.STEPS}] {text} … ")
        self.out.flush()
        try:
            detail = action()
        except DemoError as exc:
            self.out.write(f"FAILED\n        {exc}\n")
            raise
        self.out.write(f"ok{f' ({detail})' if detail else ''}\n")

    # -- helpers ---------------------------------------------------------------------------

    def send(self, actor: str, **fields: Any) -> dict[str, Any]:
        return self.gateway.send(actor, {"userId": self.user, **fields}, timeout=self.timeout)

    def move_price(self, price: D) -> None:
        self.sim.admin("/sim/price", {"symbol": BTC_ID, "price": str(price)})
        key = price_key(self.settings.redis_prefix, BTC)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            raw = self.client.get(key)
            if raw is not None and D(orjson.loads(raw)["mark"]) == price:
                return
            time.sleep(0.05)
        raise DemoError(f"the streamer did not cache mark {price} (is `pms streamer` running?)")

    def wait_event(self, what: str, sub: int, type_: str, **data: Any) -> dict[str, Any]:
        def match(e: dict[str, Any]) -> bool:
            return (
                e["type"] == type_
                and str(e.get("subAccountId")) == str(sub)
                and all(str(e["data"].get(k)) == str(v) for k, v in data.items())
            )

        return self.events.wait(what, match, self.timeout)

    def book(self, sub: int) -> tuple[D, D, D]:
        """(wallet, qty, entry) of the BTC position, from Postgres."""
        with self.db.connect() as conn:
            wallet = conn.execute(
                select(SubAccount.wallet_balance).where(SubAccount.id == sub)
            ).scalar_one()
            row = conn.execute(
                select(Position.qty, Position.entry_price).where(
                    Position.sub_account_id == sub,
                    Position.symbol == BTC,
                    Position.closed_at.is_(None),
                )
            ).first()
        qty, entry = (D(row[0]), D(row[1])) if row else (D(0), D(0))
        return D(wallet), qty, entry

    def open_account(self, role: str, amount: str, mode: str) -> int:
        sub = int(self.send("create_sub_account", name=f"{role} ({self.user})")["subAccountId"])
        self.send("deposit", subAccountId=sub, amount=amount)
        self.send(
            "update_risk_rules",
            role="admin",
            subAccountId=sub,
            maxLeverage=50,
            maxExposureMultiple=100,
            liquidationMode=mode,
        )
        self.members[role] = Member(role, sub, mode, D(amount))
        return sub

    # -- the story -------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        self.step("Pausing the simulator's random walk; BTC marked at 60,000", self._setup)
        self.step("Opening three sub-accounts and funding them", self._accounts)
        self.step("carol buys 0.05 BTC at market", self._carol_market)
        self.step("carol rests a limit sell of 0.05 BTC at 60,600", self._carol_limit)
        self.step("BTC rallies to 60,700: carol's limit sell fills", self._rally)
        self.step("alice and bob each buy 0.4 BTC at 50x", self._leveraged_longs)
        self.step("BTC falls: both margin ratios pass 0.70", self._fall_to_warning)
        self.step("A margin call reaches both", self._margin_calls)
        self.step("BTC falls through their liquidation level", self._crash)
        self.step("alice (close): her position is market-closed", self._alice_closed)
        self.step("bob (takeover): his position moves to the house", self._bob_taken_over)
        self.step("Both liquidations are recorded in Postgres", self._recorded)
        self.events.poll()
        return [account_summary(m, self.events) for m in self.members.values()]

    def _setup(self) -> str:
        self.sim.admin("/sim/walk", {"paused": True})
        self.move_price(START_PRICE)
        return "walk paused"

    def _accounts(self) -> str:
        carol = self.open_account("carol", "5000", "close")
        alice = self.open_account("alice", "1000", "close")
        bob = self.open_account("bob", "1000", "takeover")
        return f"carol #{carol} 5,000 USDT; alice #{alice} and bob #{bob} 1,000 USDT each"

    def _carol_market(self) -> str:
        sub = self.members["carol"].sub_account_id
        self.send("place_market_order", subAccountId=sub, symbol=BTC, side="BUY", qty="0.05")
        fill = self.wait_event("carol's market fill", sub, "trade_fill", side="BUY")
        return f"filled at {fill['data']['price']}"

    def _carol_limit(self) -> str:
        sub = self.members["carol"].sub_account_id
        order = self.send(
            "place_limit_order",
            subAccountId=sub,
            symbol=BTC,
            side="SELL",
            qty="0.05",
            price=str(LIMIT_PRICE),
        )
        return f"order {order.get('orderId', '?')} resting"

    def _rally(self) -> str:
        sub = self.members["carol"].sub_account_id
        self.move_price(RALLY_PRICE)
        fill = self.wait_event("carol's limit fill", sub, "trade_fill", side="SELL")
        self.wait_event("carol flat", sub, "position_update", qty="0")
        return f"sold at {fill['data']['price']}, realized {fill['data']['realizedPnl']}"

    def _leveraged_longs(self) -> str:
        prices = []
        for role in ("alice", "bob"):
            sub = self.members[role].sub_account_id
            self.send(
                "place_market_order",
                subAccountId=sub,
                symbol=BTC,
                side="BUY",
                qty="0.4",
                leverage=50,
            )
            fill = self.wait_event(f"{role}'s fill", sub, "trade_fill", side="BUY")
            prices.append(fill["data"]["price"])
        return f"entries {prices[0]} and {prices[1]}"

    def _marks(self, ratio: D) -> list[D]:
        out = []
        for role in ("alice", "bob"):
            wallet, qty, entry = self.book(self.members[role].sub_account_id)
            if qty <= 0:
                raise DemoError(f"{role} holds no BTC long")
            out.append(mark_for_ratio(wallet, qty, entry, ratio))
        return out

    def _fall_to_warning(self) -> str:
        a, b = self._marks(D("0.75"))
        mark = ((a + b) / 2).quantize(TICK)
        self.move_price(mark)
        return f"mark {mark}"

    def _margin_calls(self) -> str:
        ratios = []
        for role in ("alice", "bob"):
            sub = self.members[role].sub_account_id
            event = self.wait_event(
                f"margin_call for {role} (is the risk monitor running?)", sub, "margin_call"
            )
            ratios.append(str(event["data"].get("marginRatio", "?")))
        return f"margin ratios {' and '.join(ratios)}"

    def _crash(self) -> str:
        mark = min(self._marks(D("1.05")))
        self.move_price(mark)
        return f"mark {mark}"

    def _alice_closed(self) -> str:
        sub = self.members["alice"].sub_account_id
        self.wait_event("alice's liquidation", sub, "liquidation", action="liquidate_close")
        fill = self.wait_event("alice's closing fill", sub, "trade_fill", side="SELL")
        self.wait_event("alice flat", sub, "position_update", qty="0")
        return f"sold at {fill['data']['price']}"

    def _bob_taken_over(self) -> str:
        sub = self.members["bob"].sub_account_id
        self.wait_event("bob's liquidation", sub, "liquidation", action="liquidate_takeover")
        self.wait_event("bob flat", sub, "position_update", qty="0")
        return "no exchange order"

    def _recorded(self) -> str:
        wanted = {
            self.members["alice"].sub_account_id: "liquidate_close",
            self.members["bob"].sub_account_id: "liquidate_takeover",
        }
        deadline = time.monotonic() + self.timeout
        while True:
            with self.db.connect() as conn:
                rows = conn.execute(
                    select(
                        LiquidationEvent.sub_account_id,
                        LiquidationEvent.action,
                        LiquidationEvent.status,
                    ).where(LiquidationEvent.sub_account_id.in_(list(wanted)))
                ).all()
            done = {(s, a) for s, a, st in rows if st == "DONE"}
            if all((s, a) in done for s, a in wanted.items()):
                return f"{len(rows)} liquidation event row(s)"
            if time.monotonic() > deadline:
                raise DemoError(f"liquidation_events not DONE in time: {rows}")
            time.sleep(0.2)

    def close(self) -> None:
        with contextlib.suppress(DemoError):
            self.sim.admin("/sim/walk", {"paused": False})
        self.db.dispose()
        self.client.close()
