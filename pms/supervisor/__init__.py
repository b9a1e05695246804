"""``pms up``: the whole system as one supervised process group.

| module | what |
| --- | --- |
| :mod:`~pms.supervisor.child` | one child process: its own process group, prefixed log lines, stop |
| :mod:`~pms.supervisor.group` | start order, restart with backoff, signal handling, shutdown |
| :mod:`~pms.supervisor.services` | Redis/Postgres: use the configured ones, or start private ones |
| :mod:`~pms.supervisor.plan` | which engine processes run (every registered one) and their flags |
"""
