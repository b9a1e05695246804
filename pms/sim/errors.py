"""Binance error bodies: ``{"code": -NNNN, "msg": "..."}`` with the HTTP status Binance uses.

A handler raises :class:`SimError`; the app turns it into the JSON body. Sample body::

    {"code": -2019, "msg": "Margin is insufficient."}
"""

from __future__ import annotations


class SimError(Exception):
    """A Binance-style rejection (a protocol answer, not an engine error: no ``PmsError``).

    ``status`` is the HTTP status (400 unless stated).
    """

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


UNKNOWN_503_MSG = "Unknown error, please check your request or try again later."
POST_ONLY_MSG = (
    "Due to the order could not be executed as maker, the Post Only order will be rejected. "
    "The order will not be recorded in the order book"
)


def mandatory(name: str) -> SimError:
    return SimError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def bad_param(name: str) -> SimError:
    return SimError(-1130, f"Invalid data sent for a parameter '{name}'.")


def invalid_symbol() -> SimError:
    return SimError(-1121, "Invalid symbol.")


def timestamp_outside() -> SimError:
    return SimError(-1021, "Timestamp for this request is outside of the recvWindow.")


def bad_signature() -> SimError:
    return SimError(-1022, "Signature for this request is not valid.")


def bad_api_key_format() -> SimError:
    return SimError(-2014, "API-key format invalid.", 401)


def bad_api_key() -> SimError:
    return SimError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def precision() -> SimError:
    return SimError(-1111, "Precision is over the maximum defined for this asset.")


def qty_not_positive() -> SimError:
    return SimError(-4003, "Quantity less than or equal to zero.")


def lot_size() -> SimError:
    return SimError(-1013, "Filter failure: LOT_SIZE")


def price_filter() -> SimError:
    return SimError(-1013, "Filter failure: PRICE_FILTER")


def price_not_positive() -> SimError:
    return SimError(-4001, "Price less than 0.")


def off_tick() -> SimError:
    return SimError(-4014, "Price not increased by tick size.")


def min_notional(notional: str) -> SimError:
    return SimError(
        -4164,
        f"Order's notional must be no smaller than {notional} (unless you choose reduce only).",
    )


def above_multiplier_cap() -> SimError:
    return SimError(-4016, "Price is higher than mark price multiplier cap.")


def below_multiplier_floor() -> SimError:
    return SimError(-4024, "Price is lower than mark price multiplier floor.")


def max_open_orders() -> SimError:
    return SimError(-2025, "Reach max open order limit.")


def max_position_at_leverage() -> SimError:
    return SimError(-2027, "Exceeded the maximum allowable position at current leverage.")


def bad_resp_type() -> SimError:
    return SimError(-1136, "Invalid newOrderRespType.")


def bad_combination() -> SimError:
    return SimError(-1128, "Combination of optional parameters invalid.")


def interval_too_long(days: int) -> SimError:
    return SimError(-1127, f"More than {days * 24} hours between startTime and endTime.")


def bad_client_id() -> SimError:
    return SimError(-4015, "Client order id is not valid.")


def duplicate_client_id() -> SimError:
    return SimError(-4116, "ClientOrderId is duplicated.")


def unknown_order() -> SimError:
    return SimError(-2011, "Unknown order sent.")


def no_such_order() -> SimError:
    return SimError(-2013, "Order does not exist.")


def margin_insufficient() -> SimError:
    return SimError(-2019, "Margin is insufficient.")


def reduce_only_rejected() -> SimError:
    return SimError(-2022, "ReduceOnly Order is rejected.")


def post_only_rejected() -> SimError:
    return SimError(-5022, POST_ONLY_MSG)


def leverage_invalid(value: str) -> SimError:
    return SimError(-4028, f"Leverage {value} is not valid")


def listen_key_missing() -> SimError:
    return SimError(-1125, "This listenKey does not exist.")


def algo_only() -> SimError:
    return SimError(
        -4120,
        "Order type not supported for this endpoint. Please use the Algo Order API "
        "endpoints instead.",
    )
