"""The final table, built only from what a gateway saw: command results and events.

Per sub-account: deposited, wallet (last ``balance_update``), open position per symbol (last
``position_update``), realized PnL and fees (sum of ``trade_fill``), liquidation actions and
the count of events by type. The end-to-end test compares it with Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pms.demo.client import Events


@dataclass(frozen=True, slots=True)
class Member:
    role: str
    sub_account_id: int
    mode: str
    deposited: Decimal


def account_summary(member: Member, events: Events) -> dict[str, Any]:
    mine = events.of(member.sub_account_id)
    wallet = member.deposited
    positions: dict[str, Decimal] = {}
    realized = fees = Decimal(0)
    counts: dict[str, int] = {}
    liquidations: list[str] = []
    for event in mine:
        data, kind = event["data"], event["type"]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "balance_update":
            wallet = Decimal(data["balance"])
        elif kind == "position_update":
            positions[data["symbol"]] = Decimal(data["qty"])
        elif kind == "trade_fill":
            realized += Decimal(data["realizedPnl"])
            fees += Decimal(data["fee"])
        elif kind == "liquidation" and data.get("action") not in liquidations:
            liquidations.append(str(data.get("action")))
    return {
        "role": member.role,
        "subAccountId": member.sub_account_id,
        "liquidationMode": member.mode,
        "deposited": str(member.deposited),
        "wallet": str(wallet),
        "positions": {s: str(q) for s, q in sorted(positions.items()) if q != 0},
        "realizedPnl": str(realized),
        "fees": str(fees),
        "liquidations": liquidations,
        "events": dict(sorted(counts.items())),
    }


def render(rows: list[dict[str, Any]]) -> str:
    headers = ("account", "id", "mode", "deposited", "wallet", "position", "realized", "fees")
    lines = [headers]
    for r in rows:
        position = ", ".join(f"{q} {s.split('/')[0]}" for s, q in r["positions"].items()) or "flat"
        lines.append(
            (
                r["role"],
                str(r["subAccountId"]),
                r["liquidationMode"],
                _money(r["deposited"]),
                _money(r["wallet"]),
                position,
                _money(r["realizedPnl"]),
                _money(r["fees"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")
    for r in rows:
        events = ", ".join(f"{k} {v}" for k, v in r["events"].items())
        liq = f"; liquidation: {', '.join(r['liquidations'])}" if r["liquidations"] else ""
        out.append(f"{r['role']}: {events}{liq}")
    return "\n".join(out)


def _money(text: str) -> str:
    return f"{Decimal(text):,.2f}"
