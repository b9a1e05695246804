"""``pms order resync``: bad input is one line on stderr, exit 2, nothing done; an unknown
order is refused the same way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pms.config import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pms.cli.main", "order", "resync", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["12", "--since", "yesterday"], "not an ISO 8601 time"),
        (["12", "--since", "2026-11-20T00:00:00"], "give a time zone"),
        (["x12", "--since", "2026-11-20T00:00:00Z"], "not an order id"),
        (["12", "--since", "2999-01-01T00:00:00Z"], "is in the future"),
    ],
)
def test_bad_input(settings: Settings, args: list[str], said: str) -> None:
    done = pms(*args)
    assert done.returncode == 2, done
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""


def test_unknown_order(settings: Settings) -> None:
    done = pms("999999999999", "--since", "2026-11-20T00:00:00Z")
    assert done.returncode == 2 and done.stderr == "error: order 999999999999 not found\n", done
