from workers import broker as _broker  # noqa: F401  (the broker must exist before any actor)
from workers import system  # noqa: F401
