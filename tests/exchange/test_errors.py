"""Error mapping: for each Binance error answer, the new transport raises what ccxt's own
``fetch`` raises (class and message), and the adapter turns it into the same engine error as
before (``pms.exchange.errors.translate`` on ccxt's exception, Retry-After included)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import ccxt
import orjson
import pytest

from pms.domain.enums import OrderType, Side
from pms.errors import ExchangeRejected, ExchangeUnavailable, PmsError, RateLimited
from pms.exchange.binance import BinanceExchange
from pms.exchange.ccxt_factory import make_binanceusdm
from pms.exchange.errors import OrderUnknownToExchange, UnknownOrderState, translate
from pms.exchange.model import OrderRequest
from pms.exchange.rest import SignedRest
from pms.exchange.transport import KeepAliveTransport
from pms.sim.runner import SimServer
from tests.exchange.servers import Answer, CannedServer, http_answer


def binance(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> Answer:
    return http_answer(status, orjson.dumps({"code": code, "msg": msg}), headers)


HTML = {"Content-Type": "text/html"}
# (id, answer, ccxt class, engine error class)
CASES: list[tuple[str, Answer, type[Exception], type[PmsError]]] = [
    (
        "-2019",
        binance(400, -2019, "Margin is insufficient."),
        ccxt.InsufficientFunds,
        ExchangeRejected,
    ),
    (
        "-2010",
        binance(400, -2010, "Account has insufficient balance for requested action."),
        ccxt.InsufficientFunds,
        ExchangeRejected,
    ),
    ("-1121", binance(400, -1121, "Invalid symbol."), ccxt.BadSymbol, ExchangeRejected),
    (
        "-4164",
        binance(
            400,
            -4164,
            "Order's notional must be no smaller than 100 (unless you choose reduce only).",
        ),
        ccxt.InvalidOrder,
        ExchangeRejected,
    ),
    (
        "-2011",
        binance(400, -2011, "Unknown order sent."),
        ccxt.OrderNotFound,
        OrderUnknownToExchange,
    ),
    (
        "-2013",
        binance(400, -2013, "Order does not exist."),
        ccxt.OrderNotFound,
        OrderUnknownToExchange,
    ),
    (
        "-1102",
        binance(
            400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."
        ),
        ccxt.BadRequest,
        ExchangeRejected,
    ),
    (
        "-5022",
        binance(
            400,
            -5022,
            "Due to the order could not be executed as maker, the Post Only order will be rejected.",
        ),
        ccxt.OrderNotFillable,
        ExchangeRejected,
    ),
    (
        "-2015",
        binance(401, -2015, "Invalid API-key, IP, or permissions for action."),
        ccxt.AuthenticationError,
        ExchangeRejected,
    ),
    (
        "-1021",
        binance(400, -1021, "Timestamp for this request is outside of the recvWindow."),
        ccxt.InvalidNonce,
        UnknownOrderState,
    ),
    (
        "429",
        binance(
            429,
            -1003,
            "Too many requests; current limit of IP is 2400 requests per minute.",
            {"Retry-After": "7"},
        ),
        ccxt.DDoSProtection,
        RateLimited,
    ),
    (
        "418",
        binance(
            418,
            -1003,
            "Way too many requests; IP banned until 1764000000000.",
            {"Retry-After": "120"},
        ),
        ccxt.DDoSProtection,
        RateLimited,
    ),
    (
        "503-1000",
        binance(503, -1000, "Unknown error, please check your request or try again later."),
        ccxt.OperationFailed,
        UnknownOrderState,
    ),
    (
        "500-1001",
        binance(500, -1001, "Internal error; unable to process your request. Please try again."),
        ccxt.OperationFailed,
        UnknownOrderState,
    ),
    (
        "503-1008",
        binance(
            503,
            -1008,
            "Server is currently overloaded with other requests. Please try again in a few minutes.",
        ),
        ccxt.OperationFailed,
        UnknownOrderState,
    ),
    (
        "-1007",
        binance(
            408,
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        ),
        ccxt.RequestTimeout,
        UnknownOrderState,
    ),
    (
        "503-html",
        http_answer(503, b"<html><body>Service Unavailable</body></html>", HTML),
        ccxt.ExchangeNotAvailable,
        UnknownOrderState,
    ),
    ("502-empty", http_answer(502, b"", HTML), ccxt.ExchangeNotAvailable, UnknownOrderState),
    (
        "504-html",
        http_answer(504, b"<html>Gateway Time-out</html>", HTML),
        ccxt.RequestTimeout,
        UnknownOrderState,
    ),
    (
        "404-html",
        http_answer(404, b"<html>Not Found</html>", HTML),
        ccxt.ExchangeNotAvailable,
        UnknownOrderState,
    ),
    (
        "200-list-error",
        http_answer(200, b'[{"code": -2011, "msg": "Unknown order sent."}]'),
        ccxt.OrderNotFound,
        OrderUnknownToExchange,
    ),
    (
        "200-code-error",
        binance(200, -1000, "An unknown error occured while processing the request."),
        ccxt.OperationFailed,
        UnknownOrderState,
    ),
]
OK: list[tuple[str, Answer]] = [
    ("200-code-200", binance(200, 200, "success")),
    ("200-list", http_answer(200, b'[{"orderId": 1}, {"orderId": 2}]')),
    ("200-text", http_answer(200, b"pong", {"Content-Type": "text/plain"})),
    ("200-empty-object", http_answer(200, b"  {}  ")),
]


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    with CannedServer() as s:
        s.routes[b"/fapi/v1/time"] = lambda req, sock: http_answer(
            body=orjson.dumps({"serverTime": int(time.time() * 1000)})
        )(req, sock)
        yield s


@pytest.fixture(autouse=True)
def _clear(server: CannedServer) -> None:
    server.clear()


@pytest.fixture(scope="module")
def pair(server: CannedServer) -> Iterator[tuple[Any, SignedRest]]:
    theirs = make_binanceusdm(server.url, "k", "s")
    transport = KeepAliveTransport(2.0)
    ours = SignedRest(make_binanceusdm(server.url, "k", "s"), transport)
    yield theirs, ours
    transport.close()
    theirs.session.close()


def outcome(fn: Any) -> tuple[str, str] | Any:
    try:
        return fn()
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize(
    ("answer", "ccxt_class"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_ccxt_raises_the_same_for_both_transports(
    server: CannedServer, pair: tuple[Any, SignedRest], answer: Answer, ccxt_class: type
) -> None:
    theirs, ours = pair
    url = f"{server.url}/fapi/v1/order"
    body = "symbol=BTCUSDT&side=BUY"
    results = []
    for ex in (theirs, ours):
        server.queue(answer)
        results.append(outcome(lambda ex=ex: ex.fetch(url, "POST", {"X-MBX-APIKEY": "k"}, body)))
    assert results[0] == results[1]
    assert results[0][0] == ccxt_class.__name__


@pytest.mark.parametrize("answer", [c[1] for c in OK], ids=[c[0] for c in OK])
def test_success_bodies_come_back_the_same(
    server: CannedServer, pair: tuple[Any, SignedRest], answer: Answer
) -> None:
    theirs, ours = pair
    results = []
    for ex in (theirs, ours):
        server.queue(answer)
        results.append(outcome(lambda ex=ex: ex.fetch(f"{server.url}/fapi/v1/openOrders")))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("answer", "engine_class"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_adapter_raises_the_same_engine_error_as_before(
    server: CannedServer, answer: Answer, engine_class: type[PmsError]
) -> None:
    theirs = make_binanceusdm(server.url, "k", "s")
    theirs.enableRateLimit = False
    theirs.load_time_difference()
    server.queue(answer)
    try:
        theirs.fapiPrivateGetOpenOrders({})
    except Exception as exc:  # the adapter's old path: ccxt, then translate
        retry_after = (theirs.last_response_headers or {}).get("Retry-After")
        before = translate(exc, action="open orders", retry_after=retry_after)
    theirs.session.close()

    bx = BinanceExchange(server.url, "k", "s", timeout_ms=2000)
    server.queue(answer, answer)  # -1021 is re-synced and sent once more
    with pytest.raises(PmsError) as err:
        bx.fetch_open_orders()
    bx.close()

    assert type(err.value) is engine_class
    assert type(before) is engine_class
    assert err.value.details.keys() == before.details.keys()
    assert err.value.details.get("retryAfterSec") == before.details.get("retryAfterSec")


def test_a_stale_timestamp_is_resynced_and_sent_once_more(server: CannedServer) -> None:
    bx = BinanceExchange(server.url, "k", "s", timeout_ms=2000)
    server.queue(
        binance(400, -1021, "Timestamp for this request is outside of the recvWindow."),
        http_answer(body=b"[]"),
    )
    assert bx.fetch_open_orders() == []
    bx.close()
    paths = [r.split(b" ")[1].split(b"?")[0] for r in server.requests]
    assert paths == [b"/fapi/v1/time", b"/fapi/v1/openOrders"] * 2


@pytest.mark.parametrize("field", [b'"markPrice":""', b'"markPrice":"0"', b'"indexPrice":"1"'])
def test_a_missing_or_zero_mark_price_is_no_price(server: CannedServer, field: bytes) -> None:
    # Read as 0, an empty field would make every notional and margin 0 downstream.
    bx = BinanceExchange(server.url, "k", "s", timeout_ms=2000)
    server.queue(http_answer(body=b'{"symbol":"BTCUSDT",' + field + b"}"))
    with pytest.raises(ExchangeUnavailable, match="no usable mark price"):
        bx.fetch_mark_price("BTC/USDT:USDT")
    server.queue(http_answer(body=b'{"symbol":"BTCUSDT","markPrice":"60000.5"}'))
    assert bx.fetch_mark_price("BTC/USDT:USDT") == Decimal("60000.5")
    bx.close()


@pytest.mark.parametrize(
    ("answer", "pause"),
    [
        (binance(418, -1003, "Way too many requests; IP banned.", {"Retry-After": "30"}), 30.0),
        (binance(429, -1003, "Too many requests."), 10.0),
    ],
    ids=["418-retry-after", "429-default"],
)
def test_after_a_rate_limit_nothing_is_sent_until_the_pause_is_over(
    server: CannedServer, answer: Answer, pause: float
) -> None:
    """Calling on after a 429 is what earns a ban, and on after a 418 what extends it (the ban
    is per IP: every process's orders and liquidations stop). The adapter refuses its calls
    itself, nothing sent, until the answer's Retry-After (or a default) has passed."""
    now = [100.0]
    bx = BinanceExchange(server.url, "k", "s", timeout_ms=2000, monotonic=lambda: now[0])
    server.queue(answer)
    with pytest.raises(RateLimited):
        bx.fetch_open_orders()
    sent = len(server.requests)
    now[0] += pause - 1
    with pytest.raises(RateLimited) as refused:
        bx.create_order(
            OrderRequest("BTC/USDT:USDT", Side.BUY, OrderType.MARKET, Decimal("0.002"), "t-gate")
        )
    assert refused.value.details["placed"] is False
    assert refused.value.details["retryAfterSec"] == 1.0
    assert len(server.requests) == sent, "refused here, nothing sent"
    now[0] += 1
    server.queue(http_answer(body=b"[]"))
    assert bx.fetch_open_orders() == []
    bx.close()


def test_instruments_carry_the_exchanges_filters(
    sim: SimServer, adapter: Callable[..., BinanceExchange]
) -> None:
    """exchangeInfo's filters as the pre-trade checks use them, PERCENT_PRICE included."""
    btc = adapter(sim.url).load_instruments()["BTC/USDT:USDT"]
    assert (btc.tick_size, btc.step_size, btc.min_notional) == (
        Decimal("0.1"),
        Decimal("0.001"),
        Decimal("100"),
    )
    assert (btc.percent_up, btc.percent_down) == (Decimal("1.0500"), Decimal("0.9500"))
    assert btc.brackets[0].initial_leverage == 125
