"""Hand-framed Redis commands: for the few writes where redis-py's per-command packing and
reply parsing cost more than the work (the risk pass's 2,000 snapshots, an event burst).

The caller frames the RESP bytes (with :func:`head` / :func:`bulk`); :func:`round_trip`
sends them on one pooled connection and reads the replies back: one round trip. A failure
drops the connection (replies may be left unread on it) and raises, so the caller can fall
back to the client's own path, which reconnects and retries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis


def head(args: list[bytes]) -> bytes:
    """A RESP command of ``len(args) + 1`` arguments, framed up to its missing last one."""
    bulks = b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
    return b"*%d\r\n%b" % (len(args) + 1, bulks)


def bulk(text: str) -> str:
    """``text`` as a RESP bulk string (its length counted in UTF-8 bytes)."""
    size = len(text) if text.isascii() else len(text.encode())
    return f"${size}\r\n{text}\r\n"


def command(args: list[bytes]) -> bytes:
    """A whole RESP command."""
    last = args[-1]
    return head(args[:-1]) + b"$%d\r\n%b\r\n" % (len(last), last)


def round_trip(client: redis.Redis, pieces: Iterable[bytes], replies: int) -> list[Any]:
    """Send ``pieces`` (framed commands, written one by one as the iterable yields them, so
    Redis works on the first while the next is framed), then read ``replies`` replies.

    A reply that is a server error raises it (as redis-py does)."""
    return InFlight(client, pieces).replies(replies)


class InFlight:
    """Framed commands sent on a pooled connection whose replies are read later, by
    :meth:`replies`: the caller does other work (another server's round trip) while Redis
    answers. The connection stays out of the pool until :meth:`replies` is called, which the
    caller must do exactly once (in a ``finally``)."""

    def __init__(self, client: redis.Redis, pieces: Iterable[bytes]) -> None:
        self._pool = client.connection_pool
        conn = self._pool.get_connection()
        try:
            first = True
            for piece in pieces:
                conn.send_packed_command([piece], check_health=first)  # type: ignore[no-untyped-call]
                first = False
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            self._pool.release(conn)
            raise
        self._conn: Any = conn

    def replies(self, count: int) -> list[Any]:
        """Read ``count`` replies and give the connection back; a reply that is a server
        error raises it, a failure drops the connection."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("the replies were read already")
        try:
            return [conn.read_response() for _ in range(count)]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._pool.release(conn)
