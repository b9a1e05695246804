"""``pms streamer`` as a process: streams into Redis, SIGTERM → clean exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import redis

from pms.config import Settings
from pms.sim.runner import SimServer
from tests.support import ROOT, wait_for


def test_pms_streamer_runs_and_exits_0_on_sigterm(
    sim: SimServer, sim_settings: Settings, redis_client: redis.Redis
) -> None:
    key = sim_settings.key("pms:price:BTC/USDT:USDT")
    redis_client.delete(key)
    env = {**os.environ, "PMS_SIM_URL": sim.url, "PMS_SIM_API_KEY": sim.api_key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pms.cli.main", "streamer", "--symbols", "BTCUSDT"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000"})
        wait_for(lambda: redis_client.get(key), 15, message="price from the process")
        wait_for(
            lambda: redis_client.hget(sim_settings.key("pms:stream:status"), "user"), 5,
            message="status",
        )  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b'"streamer stopped"' in err
