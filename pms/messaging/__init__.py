"""The messaging layer between the gateway and the engine.

- :mod:`pms.messaging.wire`: the Dramatiq message on Redis, built and enqueued like any
  producer would (HSET + RPUSH in one MULTI, as stock Dramatiq); the orjson encoder.
- :mod:`pms.messaging.broker`: :class:`FastRedisBroker`, a Dramatiq ``RedisBroker`` whose
  consumers block in Redis (BLMOVE + a claim script, one hop) instead of sleeping, with a deterministic
  maintenance sweep for fast crash redelivery; :func:`build_broker`.
- :mod:`pms.messaging.results`: :class:`ResultStore` (``pms:result:{id}`` + ``pms:results``).
- :mod:`pms.messaging.events`: :class:`EventPublisher` (``pms:events:{type}`` + stream).
"""
