"""The relay: buses (memory, Redis), per-session subscriptions, connection outboxes."""
