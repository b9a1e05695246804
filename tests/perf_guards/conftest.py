"""Reuse the trading fixtures (simulator over HTTP, in-process engine graph, funded traders)."""

from tests.trading.conftest import app, prices, sim, sim_settings, trader

__all__ = ["app", "prices", "sim", "sim_settings", "trader"]
