import os

import pytest

from pms.config import ExchangeKind, load_settings
from pms.errors import ConfigError


def test_defaults_match_the_spec(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for var in (
        "PMS_REDIS_URL",
        "PMS_DATABASE_URL",
        "PMS_EXCHANGE",
        "PMS_REDIS_PREFIX",
        "PMS_API_PORT",
    ):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.database_url.endswith("@127.0.0.1:5432/pms")
    assert s.exchange is ExchangeKind.SIM
    assert s.api_port == 8888
    assert s.key("pms:price:BTC/USDT:USDT") == "pms:price:BTC/USDT:USDT"


def test_env_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PMS_API_PORT", raising=False)
    (tmp_path / ".env").write_text(
        "PMS_API_PORT=9999\nPMS_REDIS_PREFIX=x:\nPMS_DRAMATIQ_NAMESPACE=x-ns\n"
    )
    monkeypatch.delenv("PMS_REDIS_PREFIX", raising=False)
    monkeypatch.delenv("PMS_DRAMATIQ_NAMESPACE", raising=False)
    s = load_settings()
    assert s.api_port == 9999
    assert s.key("pms:result:1") == "x:pms:result:1"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PMS_API_PORT", "70000"),
        ("PMS_EXCHANGE", "kraken"),
        ("PMS_REDIS_URL", "http://x"),
        ("PMS_DATABASE_URL", "mysql://x"),
    ],
)
def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_settings()


def test_settings_are_frozen_and_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMS_BINANCE_API_SECRET", "very-secret")
    s = load_settings()
    assert "very-secret" not in repr(s)
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own frozen error
        s.api_port = 1  # type: ignore[misc]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for var in [v for v in os.environ if v.startswith("PMS_")]:
        monkeypatch.delenv(var)


@pytest.mark.usefixtures("clean_env")
def test_binance_without_api_keys_is_refused_at_start() -> None:
    """Accepted before: every process started, /ready was green (it only calls the public
    /fapi/v1/time), and every order, sync and listen key failed at the exchange."""
    with pytest.raises(ConfigError, match="PMS_BINANCE_API_KEY"):
        load_settings(exchange=ExchangeKind.BINANCE)
    with pytest.raises(ConfigError, match="PMS_BINANCE_API_SECRET"):
        load_settings(exchange=ExchangeKind.BINANCE, binance_api_key="k")
    both = load_settings(exchange=ExchangeKind.BINANCE, binance_api_key="k", binance_api_secret="s")
    assert both.exchange is ExchangeKind.BINANCE


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    "url", ["127.0.0.1:8765", "ftp://127.0.0.1:8765", "", "http://", "http://h:1/fapi"]
)
def test_a_sim_url_that_is_not_http_host_port_is_refused(url: str) -> None:
    """``127.0.0.1:8765`` was accepted; the streamer then made it ``wss://127.0.0.1:8765``."""
    with pytest.raises(ConfigError, match="PMS_SIM_URL"):
        load_settings(sim_url=url)
    assert load_settings(sim_url="http://127.0.0.1:8765/").sim_url == "http://127.0.0.1:8765"


@pytest.mark.usefixtures("clean_env")
def test_a_prefix_without_a_namespace_of_its_own_is_refused() -> None:
    """The command queues are named by the Dramatiq namespace, not the prefix: a staging
    system given only its own prefix consumed production's commands."""
    with pytest.raises(ConfigError, match="PMS_DRAMATIQ_NAMESPACE"):
        load_settings(redis_prefix="staging:")
    staging = load_settings(redis_prefix="staging:", dramatiq_namespace="staging")
    assert staging.dramatiq_namespace != load_settings().dramatiq_namespace
