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
    (tmp_path / ".env").write_text("PMS_API_PORT=9999\nPMS_REDIS_PREFIX=x:\n")
    monkeypatch.delenv("PMS_REDIS_PREFIX", raising=False)
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
