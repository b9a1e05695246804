from tests.messaging.conftest import msg_settings, rclient  # noqa: F401  (fixtures)
