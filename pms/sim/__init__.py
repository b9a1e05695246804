"""The simulated exchange: a Binance USDⓈ-M futures look-alike (REST + WebSocket on one port).

ccxt's ``binanceusdm`` and plain WebSocket clients talk to it unchanged except for base URLs
(see :func:`pms.exchange.ccxt_factory.make_binanceusdm`). Start it in-process with
:class:`pms.sim.runner.SimServer` or standalone with ``pms sim``. See ``docs/simulator.md``.
"""
