"""Redis for kdc-trio: our trio-native RESP client (hiredis) and the redis-py compat backend.

- `client.RedisClient` / `open_redis`: pooled commands and pipelines with deadlines.
- `cluster.ClusterClient`: the same command interface over a Redis Cluster (`redis+cluster://`),
  routed by slot (`slots`, `keyspec`).
- `pubsub.PubSub`: one connection for every channel, batched delivery, reconnect + resubscribe.
- `sharded_pubsub.ShardedPubSub`: PubSub's interface over a Redis Cluster: one SSUBSCRIBE
  connection per master, channels re-mapped when the topology changes.
- `compat.CompatClient` / `compat.CompatPubSub`: the same interface on redis-py under trio-asyncio.
- `commands`: what the stores need from either (`Commands`, `Script`, `transaction`).
"""
