from workers import (  # noqa: F401
    accounts,
    risk,
    sync,
    system,
    trading,
)
from workers import broker as _broker  # noqa: F401  (the broker must exist before any actor)
