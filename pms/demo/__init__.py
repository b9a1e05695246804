"""``pms demo``: a narrated scenario against a running system; also a smoke test.

| module | what |
| --- | --- |
| :mod:`~pms.demo.client` | sends commands like a gateway, tails events, drives the simulator |
| :mod:`~pms.demo.scenario` | the story, step by step, each step checked |
| :mod:`~pms.demo.summary` | the final table, built from the events a gateway saw |
"""
