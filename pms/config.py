"""Settings: one frozen, typed object built once per process from the environment and `.env`.

Every variable carries the ``PMS_`` prefix. An invalid value stops start-up with a message that
names the variable (see :func:`load_settings`). Nothing in ``pms`` reads ``os.environ`` itself:
the settings object is built at the process edge and passed down.
"""

from __future__ import annotations

import enum
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pms.errors import ConfigError

DEFAULT_NAMESPACE = "dramatiq"


class ExchangeKind(enum.StrEnum):
    SIM = "sim"
    BINANCE = "binance"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PMS_",
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
    )

    # Out of the repr (URLs may carry passwords; a repr reaches logs and tracebacks).
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", repr=False)
    # Prepended to every Redis key this engine owns but the command queues, which are named
    # by the Dramatiq namespace: several systems (or test runs) share one Redis without
    # colliding when each has both of its own (a prefix with the default namespace is
    # refused). Empty in production: keys are then exactly SPEC §3.5.
    redis_prefix: str = ""
    dramatiq_namespace: str = DEFAULT_NAMESPACE
    database_url: str = Field(
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/pms", repr=False
    )
    exchange: ExchangeKind = ExchangeKind.SIM
    binance_api_key: SecretStr = SecretStr("")
    binance_api_secret: SecretStr = SecretStr("")
    sim_url: str = "http://127.0.0.1:8765"
    sim_api_key: str = "pms-sim-key"
    sim_api_secret: SecretStr = SecretStr("pms-sim-secret")
    # The streamer turns the master account's BNB fee discount off when it finds it on
    # (commissions paid in BNB are charged to no sub-account: pms.streaming.commissions).
    # False: it only logs an error.
    enforce_usdt_commissions: bool = True
    # How long one exchange REST call may take before its outcome is treated as unknown.
    exchange_timeout_ms: int = Field(default=5000, ge=100, le=60_000)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8888, ge=1, le=65535)
    # ``pms worker``: Dramatiq's Prometheus middleware serves the fleet's counters (messages,
    # errors, dead letters, durations and in-progress per actor, plus the workers' own
    # prometheus_client metrics) at ``http://{host}:{port}/``; port 0 turns it off.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9191, ge=0, le=65535)
    log_level: str = "INFO"
    log_json: bool = True
    # Control API (``pms api``): when set, every route but /health wants
    # ``Authorization: Bearer <token>``. Never logged.
    api_token: SecretStr = SecretStr("")
    # ``/ready`` fails when no stream has had a message for this long.
    ready_stream_stale_ms: int = Field(default=15_000, ge=1_000)
    # ``pms up``: where private Redis/Postgres instances keep their data (relative to the cwd).
    data_dir: str = "var"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if not value.startswith("postgresql"):
            raise ValueError("must be a postgresql:// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg2://" + value.removeprefix("postgresql://")
        return value

    @field_validator("sim_url")
    @classmethod
    def _sim_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be http(s)://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be http(s)://host[:port], without a path")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.exchange is ExchangeKind.BINANCE and not (
            self.binance_api_key.get_secret_value() and self.binance_api_secret.get_secret_value()
        ):
            raise ValueError(
                "PMS_BINANCE_API_KEY and PMS_BINANCE_API_SECRET are required with"
                " PMS_EXCHANGE=binance"
            )
        if self.redis_prefix and self.dramatiq_namespace == DEFAULT_NAMESPACE:
            raise ValueError(
                "PMS_REDIS_PREFIX is set but PMS_DRAMATIQ_NAMESPACE is left at"
                f" {DEFAULT_NAMESPACE!r}: the command queues would be shared with every other"
                " system on this Redis; give PMS_DRAMATIQ_NAMESPACE a value of its own"
            )
        return self

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    def key(self, suffix: str) -> str:
        """The full Redis key for ``suffix`` (``pms:price:BTC/USDT:USDT`` → prefixed)."""
        return f"{self.redis_prefix}{suffix}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation failure into one readable ``ConfigError``."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"PMS_{field.upper()}: {message}" if field else message)
        raise ConfigError("invalid settings: " + "; ".join(problems)) from exc
