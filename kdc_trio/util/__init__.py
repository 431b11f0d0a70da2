"""Small primitives shared by the gateway's parts (no I/O of their own)."""
