"""Hostile input, generated: missing fields, wrong types, huge numbers, NaN/Infinity strings,
oversized payloads, another user's sub-account. Always a clear error result; nothing written."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from pms.app import App
from pms.commands import schemas as cmd
from pms.db.models import LedgerEntry, Order
from pms.db.session import unit_of_work
from pms.errors import ERROR_CODES
from tests.trading.conftest import BTC

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "0x10",
            "",
            " ",
            "1" * 200,
            "0.0000000000000000001",
            "-1",
            "BUY",
            BTC,
        ]
    ),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
fields = st.dictionaries(
    st.sampled_from(
        [
            "userId",
            "subAccountId",
            "symbol",
            "side",
            "qty",
            "notional",
            "price",
            "leverage",
            "reduceOnly",
            "postOnly",
            "timeInForce",
            "role",
            "extra",
        ]
    ),
    junk,
    max_size=10,
)


def counts(app: App) -> tuple[int, int]:
    with unit_of_work(app.sessions) as s:
        return (
            s.execute(select(func.count()).select_from(Order)).scalar_one(),
            s.execute(select(func.count()).select_from(LedgerEntry)).scalar_one(),
        )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    payload=fields,
    model=st.sampled_from(
        [
            (cmd.PlaceMarketOrder, "place_market_order"),
            (cmd.PlaceLimitOrder, "place_limit_order"),
            (cmd.Withdraw, "withdraw"),
        ]
    ),
)
def test_generated_garbage_is_refused_cleanly(
    app: App, prices, payload: dict, model: tuple
) -> None:
    before = counts(app)
    schema, actor = model
    handler = {
        "place_market_order": app.orders.place_market,
        "place_limit_order": app.orders.place_limit,
        "withdraw": app.accounts.withdraw,
    }[actor]
    command = {"requestId": uuid.uuid4().hex, **payload}
    result = app.runner.run(actor, command, schema, handler)
    assert result is not None and result["ok"] is False
    assert result["error"]["code"] in ERROR_CODES and result["error"]["message"]
    assert counts(app) == before


def test_oversized_and_foreign_commands(app: App, trader) -> None:
    owner, intruder = trader("1000"), trader("1000")
    before = counts(app)
    huge = intruder.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, app.orders.place_market),
        subAccountId=owner.sub_account_id,
        symbol=BTC,
        side="BUY",
        qty="0.002",
        pad="x" * 50_000,
    )
    assert huge["error"]["code"] == "VALIDATION_ERROR" and "limit" in huge["error"]["message"]
    foreign = intruder.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, app.orders.place_market),
        subAccountId=owner.sub_account_id,
        symbol=BTC,
        side="BUY",
        qty="0.002",
    )
    assert foreign["error"]["code"] == "FORBIDDEN"
    assert counts(app) == before
    assert (
        app.runner.run(
            "place_market_order",
            ["not", "a", "dict"],
            cmd.PlaceMarketOrder,
            app.orders.place_market,
        )
        is None
    )
    assert (
        app.runner.run(
            "place_market_order",
            {"requestId": "x" * 65},
            cmd.PlaceMarketOrder,
            app.orders.place_market,
        )
        is None
    )


def test_an_id_in_other_digits_is_refused_not_read(app: App, trader) -> None:
    """'²' passes str.isdigit() but int() refuses it; '٣' passes both (int('٣') == 3). An id
    from outside is ASCII digits or refused, with the field named."""
    t = trader("1000")
    before = counts(app)
    for text in ("²", "٣", f"{t.sub_account_id}٣"):
        refused = t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, app.orders.place_market),
            subAccountId=text,
            symbol=BTC,
            side="BUY",
            qty="0.002",
        )
        assert refused["error"]["code"] == "VALIDATION_ERROR", refused
        assert "subAccountId" in refused["error"]["message"], refused
        assert "invalid literal" not in refused["error"]["message"], refused
    assert counts(app) == before


@pytest.mark.parametrize("text", ["\u0661", "\uff11", "0.\u0665"])  # ١, fullwidth 1, 0.٥
def test_a_number_in_other_digits_is_refused_not_read(app: App, trader, text: str) -> None:
    """Decimal() reads any Unicode digit, so qty '١' was 1 BTC. A number from outside is ASCII
    digits or refused, with the field named, like an id."""
    t = trader("1000")
    before = counts(app)

    refused = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, app.orders.place_market),
        subAccountId=t.sub_account_id,
        symbol=BTC,
        side="BUY",
        qty=text,
    )

    assert refused["error"]["code"] == "VALIDATION_ERROR", refused
    assert "qty" in refused["error"]["message"], refused
    assert counts(app) == before
