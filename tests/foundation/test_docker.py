"""Docker cannot run here: check the compose file's structure instead."""

from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_has_services_with_healthchecks_and_a_scalable_worker() -> None:
    compose = load()
    services = compose["services"]
    for name in (
        "redis",
        "postgres",
        "migrate",
        "sim",
        "streamer",
        "scheduler",
        "api",
        "worker",
        "risk-worker",
    ):
        assert name in services, name
    for name in ("redis", "postgres", "sim", "api"):
        assert "healthcheck" in services[name]
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/ready" in " ".join(services["ready"]["command"])
    assert services["risk-worker"]["command"][:4] == ["pms", "worker", "--queues", "pms.risk"]
    worker = services["worker"]
    # A scalable service must not pin a container name or a host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"][:2] == ["pms", "worker"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_engine_services_share_one_env_file() -> None:
    for name, service in load()["services"].items():
        if name in ("redis", "postgres"):
            continue
        assert service["env_file"] == [{"path": "../.env", "required": False}], name


def test_every_engine_command_exists_in_the_cli() -> None:
    from pms.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, service in load()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] == "pms":
            assert command[1] in sub.choices, f"service {name} runs unknown command {command[1]}"


def test_dockerfile_installs_from_the_lock_file() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "uv sync --frozen" in text
    assert "COPY uv.lock" in text or "uv.lock" in text
