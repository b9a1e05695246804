"""``pms up``'s process plan: the general and the risk worker fleets, both on one machine,
serve their metrics on ports of their own (two fleets on one port: the second one's metrics
process failed to bind)."""

from __future__ import annotations

import pytest

from pms.config import Settings
from pms.supervisor.plan import Options, engine_specs, registered_commands


def env_of(settings: Settings, name: str) -> dict[str, str]:
    specs = {s.name: s for s in engine_specs(settings, registered_commands(), Options())}
    return dict(specs[name].env)


@pytest.mark.parametrize(
    ("port", "risk"), [(9191, "9192"), (19000, "19001"), (0, "0"), (65535, "0")]
)
def test_the_risk_fleet_serves_metrics_on_the_next_port(
    settings: Settings, port: int, risk: str
) -> None:
    own = settings.model_copy(update={"worker_metrics_port": port})
    assert env_of(own, "risk-worker")["PMS_WORKER_METRICS_PORT"] == risk
    assert "PMS_WORKER_METRICS_PORT" not in env_of(own, "worker")  # the configured one


def test_the_simulator_is_stopped_after_every_process_that_calls_it(settings: Settings) -> None:
    from pms.config import ExchangeKind

    sim = settings.model_copy(update={"exchange": ExchangeKind.SIM})
    specs = engine_specs(sim, registered_commands(), Options())
    assert [s.name for s in specs if s.stop_last] == ["sim"]
