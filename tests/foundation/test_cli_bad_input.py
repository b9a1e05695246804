"""README promises "Bad input gives one line on stderr, exit code 2, and changes
nothing" for every command.

- ``pms account show ID --ledger N`` with N beyond a Postgres bigint is passed to ``LIMIT``
  and ends in a psycopg2 NumericValueOutOfRange traceback (exit 1).
- ``pms worker -p 0`` prints its error on stdout (exit 2, stderr empty), so ``pms up
  --workers 0``, which does not check its numbers, brings the system up with a worker child
  that fails and is restarted forever, its reason hidden in stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pms.config import Settings

ROOT = Path(__file__).parents[2]


def pms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pms.cli.main", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        cwd=ROOT,
    )


def test_show_with_a_huge_ledger_count_is_one_line_exit_2(settings: Settings) -> None:
    created = pms("account", "create", "--user", "audit-ops", "--name", "ledger", "--json")
    assert created.returncode == 0, created.stderr
    account = str(json.loads(created.stdout)["created"]["id"])
    done = pms("account", "show", account, "--ledger", "99999999999999999999")
    raised = [line for line in done.stderr.splitlines() if line.startswith("sqlalchemy.exc.")]
    assert "Traceback" not in done.stderr, raised or done.stderr[-400:]
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_worker_with_zero_processes_says_why_on_stderr(settings: Settings) -> None:
    done = pms("worker", "-p", "0")
    assert done.returncode == 2, done
    assert "must be" in done.stderr, f"stdout={done.stdout!r} stderr={done.stderr!r}"
