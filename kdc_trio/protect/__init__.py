"""The gateway's protections at the edge, before any work is queued (KDCube's gateway has both):

- `ratelimit`: rate limits per user type on turns and on new connections, per session and per
  client address (a burst window and a clock-hour budget); memory here, Redis in `redis_ratelimit`
  (one Lua call per check, so every process shares one budget);
- `admission`: under overload (turn queue, connections, event-loop lag past a threshold of their
  capacity) new work is shed by user type, anonymous first, privileged last;
- `guard`: the one object the transports ask (`kdc_trio/ports.py` `GuardPort`).

Refusals are `ClientError`s (429 `rate_limited`, 503 `overloaded`, both with Retry-After); each
transport renders them in its one place.
"""
