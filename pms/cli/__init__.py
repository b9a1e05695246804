"""The ``pms`` console script: one sub-command module per process or tool."""
