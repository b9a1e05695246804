"""The arithmetic of one funding, on any holdings (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pms.funding.allocate import allocate, funding_fee, implied_mark

D = Decimal
EIGHT = D("0.00000001")

qtys = st.decimals(min_value=D("-50"), max_value=D("50"), places=3, allow_nan=False)
holdings = st.dictionaries(st.integers(1, 10_000), qtys, max_size=30)
marks = st.decimals(min_value=D("0.01"), max_value=D("200000"), places=2, allow_nan=False)
rates = st.decimals(min_value=D("-0.03"), max_value=D("0.03"), places=8, allow_nan=False)


def test_a_long_pays_a_positive_rate_and_a_short_receives_it() -> None:
    assert funding_fee(D("0.5"), D("60000"), D("0.0001")) == D("-3.00000000")
    assert funding_fee(D("-0.5"), D("60000"), D("0.0001")) == D("3.00000000")
    assert funding_fee(D("0.5"), D("60000"), D("-0.0001")) == D("3.00000000")


def test_the_house_takes_what_the_entries_do_not_sum_to() -> None:
    shares = allocate({1: D("0.3"), 2: D("-0.1"), 3: D("0")}, D("60000"), D("0.0001"), D("-1.3"))
    assert shares.fees == {1: D("-1.80000000"), 2: D("0.60000000")}
    assert shares.allocated == D("-1.2")
    assert shares.residual == D("-0.1")


@given(holdings, marks, rates, st.decimals(min_value=-(10**6), max_value=10**6, places=8))
def test_entries_and_residual_add_up_to_what_the_exchange_moved(
    held: dict[int, Decimal], mark: Decimal, rate: Decimal, moved: Decimal
) -> None:
    shares = allocate(held, mark, rate, moved)
    assert sum(shares.fees.values(), start=D(0)) + shares.residual == moved
    assert all(fee != 0 and fee == fee.quantize(EIGHT) for fee in shares.fees.values())
    assert set(shares.fees) <= {a for a, q in held.items() if q != 0}


@given(holdings, marks, rates)
def test_longs_pay_and_shorts_receive_a_positive_rate(
    held: dict[int, Decimal], mark: Decimal, rate: Decimal
) -> None:
    shares = allocate(held, mark, rate, D(0))
    for account, fee in shares.fees.items():
        assert (fee < 0) == ((held[account] > 0) == (rate > 0))


@given(holdings, marks, rates)
def test_books_that_match_the_exchange_leave_only_rounding_to_the_house(
    held: dict[int, Decimal], mark: Decimal, rate: Decimal
) -> None:
    """The master account's net position is the sum of the sub-accounts' (house included):
    what the exchange charges it and what they pay differ by their rounding only."""
    net = sum(held.values(), start=D(0))
    shares = allocate(held, mark, rate, funding_fee(net, mark, rate))
    assert abs(shares.residual) <= EIGHT / 2 * (len(held) + 1)


@given(qtys.filter(lambda q: q != 0), marks, rates.filter(lambda r: r != 0))
def test_the_mark_is_worked_back_from_an_exact_charge(
    net: Decimal, mark: Decimal, rate: Decimal
) -> None:
    assert implied_mark(-net * mark * rate, net, rate) == mark
    assert implied_mark(D(0), net, rate) is None
    assert implied_mark(D(1), D(0), rate) is None
