"""The master account's commissions must be paid in USDT.

Booking charges each fill's commission to its sub-account's USDT ledger. Binance's BNB fee
discount (``feeBurn``) makes the exchange take commissions in BNB while the futures wallet
holds BNB: such a commission is recorded on the fill (``fee``, ``fee_asset``) but charged to no
sub-account, so the master account would pay its sub-accounts' fees. On every user-stream
connection (a restart, a reconnect: the setting may have changed meanwhile) the streamer asks
``GET /fapi/v1/feeBurn`` and turns the discount off if it is on (``PMS_ENFORCE_USDT_COMMISSIONS``,
default true; false: it only logs an error). A failure is logged and does not stop the stream;
the booking logs every fill whose commission is not in USDT.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from pms.errors import PmsError

log = structlog.get_logger(__name__)


class FeeBurnRest(Protocol):
    async def fee_burn(self) -> bool: ...
    async def set_fee_burn(self, on: bool) -> None: ...


async def ensure_usdt_commissions(rest: FeeBurnRest, *, enforce: bool = True) -> bool | None:
    """Turn the BNB fee discount off if it is on (only report it when ``enforce`` is false).
    Returns True if it was on, False if it was off, None if the exchange could not be asked
    or refused the change (logged)."""
    try:
        if not await rest.fee_burn():
            return False
        if not enforce:
            log.error(
                "the BNB fee discount is on: commissions the exchange takes in BNB are not "
                "charged to sub-accounts (PMS_ENFORCE_USDT_COMMISSIONS is false)"
            )
            return True
        await rest.set_fee_burn(False)
    except PmsError as exc:
        log.error(
            "could not check the BNB fee discount: commissions the exchange takes in BNB are "
            "not charged to sub-accounts",
            error=exc.message,
        )
        return None
    log.warning(
        "the BNB fee discount was on: turned off, so commissions are paid in USDT and charged "
        "to the sub-accounts"
    )
    return True
