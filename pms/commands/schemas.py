"""Command schemas (SPEC §3.2): camelCase fields, decimals as strings or JSON numbers.

Unknown fields are refused (a typo such as ``reduceonly`` must not silently place a
risk-increasing order); every refusal names the field.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator
from pydantic import ValidationError as PydanticValidationError

from pms.domain.enums import LiquidationMode, Side, TimeInForce
from pms.domain.numbers import ascii_digits, parse_decimal
from pms.domain.symbols import is_canonical
from pms.errors import ValidationError

MAX_COMMAND_BYTES = 16_384
M = TypeVar("M", bound=BaseModel)
_ID = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable ASCII, no spaces


def valid_text_id(value: object) -> bool:
    """A user id, client order id ... as the gateway may send one."""
    return isinstance(value, str) and _ID.match(value) is not None


def _decimal(value: Any) -> Decimal:
    return parse_decimal(value, "number")


def _positive_decimal(value: Any) -> Decimal:
    result = parse_decimal(value, "number")
    if result <= 0:
        raise ValueError("must be positive")
    return result


def _int_id(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer id")
    if isinstance(value, str) and ascii_digits(value) and len(value) <= 18:
        return int(value)
    if isinstance(value, int) and 0 < value < 2**63:
        return value
    raise ValueError("must be a positive integer id")


def _symbol(value: Any) -> str:
    if not isinstance(value, str) or not is_canonical(value):
        raise ValueError("must be a symbol like BTC/USDT:USDT")
    return value


def _text_id(value: Any) -> str:
    if not valid_text_id(value):
        raise ValueError("must be 1 to 64 printable characters without spaces")
    return str(value)


# The request ids of the orders the risk engine places itself (ADL cuts, liquidation closes:
# ``risk:{eventId}:{symbol}[:{leg}]``). An order found by request id is resumed instead of
# placed, so a command may not use one: an owner could pre-claim their own account's next
# liquidation and have it resume their order instead.
ENGINE_REQUEST_PREFIX = "risk:"


def _request_id(value: Any) -> str:
    text = _text_id(value)
    if text.startswith(ENGINE_REQUEST_PREFIX):
        raise ValueError(f"must not start with {ENGINE_REQUEST_PREFIX!r} (the engine's own ids)")
    return text


PositiveDecimal = Annotated[Decimal, BeforeValidator(_positive_decimal)]
AnyDecimal = Annotated[Decimal, BeforeValidator(_decimal)]
SubAccountId = Annotated[int, BeforeValidator(_int_id)]
Symbol = Annotated[str, BeforeValidator(_symbol)]
TextId = Annotated[str, BeforeValidator(_text_id)]
RequestId = Annotated[str, BeforeValidator(_request_id)]
Leverage = Annotated[int, Field(ge=1, le=125, strict=True)]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    requestId: RequestId
    userId: TextId
    role: Literal["admin"] | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Ping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    requestId: RequestId
    userId: TextId | None = None
    role: Literal["admin"] | None = None


class OnAccount(Command):
    subAccountId: SubAccountId


class _OrderBase(OnAccount):
    symbol: Symbol
    side: Side
    qty: PositiveDecimal | None = None
    notional: PositiveDecimal | None = None
    leverage: Leverage | None = None
    reduceOnly: StrictBool = False

    @model_validator(mode="after")
    def _qty_or_notional(self) -> _OrderBase:
        if (self.qty is None) == (self.notional is None):
            raise ValueError("give exactly one of qty (base units) or notional (quote units)")
        return self


class PlaceMarketOrder(_OrderBase):
    pass


class PlaceLimitOrder(_OrderBase):
    price: PositiveDecimal
    postOnly: StrictBool = False
    timeInForce: TimeInForce = TimeInForce.GTC

    @model_validator(mode="after")
    def _post_only_is_gtx(self) -> PlaceLimitOrder:
        if self.postOnly and self.timeInForce not in (TimeInForce.GTC, TimeInForce.GTX):
            raise ValueError("postOnly cannot be combined with IOC or FOK")
        return self


class CancelOrder(OnAccount):
    orderId: SubAccountId | None = None
    clientOrderId: TextId | None = None

    @model_validator(mode="after")
    def _one_id(self) -> CancelOrder:
        if (self.orderId is None) == (self.clientOrderId is None):
            raise ValueError("give exactly one of orderId or clientOrderId")
        return self


class CancelAllOrders(OnAccount):
    symbol: Symbol | None = None


class ClosePosition(OnAccount):
    symbol: Symbol
    qty: PositiveDecimal | None = None


class SetLeverage(OnAccount):
    symbol: Symbol
    leverage: Leverage


class CreateSubAccount(Command):
    name: Annotated[str, Field(min_length=1, max_length=100)]


class Deposit(OnAccount):
    amount: PositiveDecimal


class Withdraw(OnAccount):
    amount: PositiveDecimal


class UpdateRiskRules(OnAccount):
    maxLeverage: Leverage | None = None
    maxNotionalPerSymbol: PositiveDecimal | None = None
    maxExposureMultiple: PositiveDecimal | None = None
    liquidationMode: LiquidationMode | None = None
    warningRatio: PositiveDecimal | None = None
    restrictedRatio: PositiveDecimal | None = None
    adl1Ratio: PositiveDecimal | None = None
    adl2Ratio: PositiveDecimal | None = None
    liquidationRatio: PositiveDecimal | None = None
    priceBandBps: Annotated[int, Field(ge=1, le=10_000, strict=True)] | None = None
    maxOrdersPerMinute: Annotated[int, Field(ge=1, le=100_000, strict=True)] | None = None


class FreezeSubAccount(OnAccount):
    reason: Annotated[str, Field(max_length=500)] | None = None


def parse_command(model: type[M], raw: Any) -> M:
    """Validate ``raw`` into ``model`` or raise our ValidationError naming every bad field."""
    if not isinstance(raw, dict):
        raise ValidationError("a command must be a JSON object")
    try:
        return model.model_validate(raw)
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"]) or "command"
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{field}: {msg}")
        raise ValidationError(
            "invalid command: " + "; ".join(problems), {"fields": problems}
        ) from None
