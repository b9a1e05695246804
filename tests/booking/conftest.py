"""Reuse the trading fixtures (simulator over HTTP, in-process app, trader, prices)."""

from tests.trading.conftest import *  # noqa: F403
