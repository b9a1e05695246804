"""Exchange WebSocket streams into the Redis cache and the booking path (SPEC §2, §3.5).

The pieces, one noun each:

* :mod:`reconnect` — the one generic reconnect loop (backoff + jitter, watchdog, rotation);
* :mod:`market` — market-data parsers and the market stream (prices, books);
* :mod:`book` — the local order book and the snapshot + ``U``/``u``/``pu`` procedure;
* :mod:`userdata` — listen-key lifecycle and the user-data stream;
* :mod:`fills` — user-stream events into the one booking path, off the event loop;
* :mod:`cache` — coalesced, pipelined Redis writes;
* :mod:`subscriptions` — which symbols to stream, changed live without reconnects;
* :mod:`status` — ``pms:stream:status``, ``stream_status`` events and metrics.

The process that wires them is ``streamer/app.py`` (``pms streamer``).
"""
