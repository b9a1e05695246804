"""Redis and Postgres for ``pms up``: the configured ones, or private ones started here.

Rule: if the configured address answers, use it. If it does not, and it is a loopback
address, and the server binaries are installed, start a private instance on that address with
its data under ``PMS_DATA_DIR`` (default ``./var``, git-ignored): ``var/redis/`` (no
persistence) and ``var/postgres/`` (``initdb`` once, trust auth on 127.0.0.1 only). System
data directories are never touched. Otherwise stop with one message saying what to start.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from pms.config import Settings
from pms.supervisor.child import ChildSpec

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class ServiceMissing(Exception):
    """A dependency is unreachable and cannot be started here; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def answers(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False


def redis_address(settings: Settings) -> Address | None:
    parts = urlsplit(settings.redis_url)
    if parts.scheme == "unix":
        return None
    return Address(parts.hostname or "127.0.0.1", parts.port or 6379)


def postgres_address(settings: Settings) -> Address:
    url = make_url(settings.database_url)
    return Address(url.host or "127.0.0.1", url.port or 5432)


def postgres_bin(name: str) -> str | None:
    """The newest installed Postgres server binary (Debian keeps them off the PATH)."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return found[-1] if found else shutil.which(name)


def private_redis(settings: Settings, data_dir: Path) -> ChildSpec | None:
    address = redis_address(settings)
    if address is None or address.answers():
        return None
    binary = shutil.which("redis-server")
    if address.host not in LOOPBACK or binary is None:
        raise ServiceMissing(
            f"Redis is not reachable at {address.host}:{address.port}. Start it (for example"
            f" `redis-server --port {address.port} --daemonize yes`, or `make services`) or"
            " point PMS_REDIS_URL at a running one."
        )
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    argv = (binary, "--port", str(address.port), "--bind", "127.0.0.1", "--dir", str(folder))
    return ChildSpec(
        "redis",
        (*argv, "--save", "", "--appendonly", "no"),
        port=("127.0.0.1", address.port),
        stop_timeout_s=10.0,
    )


def private_postgres(settings: Settings, data_dir: Path) -> ChildSpec | None:
    address = postgres_address(settings)
    if address.answers():
        return None
    server, initdb = postgres_bin("postgres"), postgres_bin("initdb")
    if address.host not in LOOPBACK or server is None or initdb is None:
        raise ServiceMissing(
            f"Postgres is not reachable at {address.host}:{address.port}. Start it (for example"
            " `make services`, or `pg_ctlcluster <version> main start`) or point"
            " PMS_DATABASE_URL at a running one."
        )
    user = make_url(settings.database_url).username or "postgres"
    folder = (data_dir / "postgres").resolve()
    run_as = _unprivileged_user() if os.geteuid() == 0 else None
    if not (folder / "PG_VERSION").exists():
        folder.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            _chown(folder, run_as)
        subprocess.run(
            [initdb, "-D", str(folder), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            user=run_as,
            capture_output=True,
        )
    argv = (server, "-D", str(folder), "-p", str(address.port), "-k", str(folder))
    return ChildSpec(
        "postgres",
        (*argv, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
        stop_signal=signal.SIGINT,  # "fast" shutdown: clients are already gone
        stop_timeout_s=20.0,
        user=run_as,
        port=("127.0.0.1", address.port),
    )


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ServiceMissing("Postgres refuses to run as root and no `postgres` user exists")


def _chown(folder: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for parent in (folder.parent, folder):
        os.chown(parent, entry.pw_uid, entry.pw_gid)
