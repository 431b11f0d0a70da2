"""`redis://`, `rediss://` and `unix://` URLs, read the way redis-py reads them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse


@dataclass(frozen=True)
class RedisURL:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    unix_path: str | None = None

    def __repr__(self) -> str:  # never print the password
        where = self.unix_path or f"{self.host}:{self.port}"
        return f"RedisURL({'rediss' if self.ssl else 'redis'}://{where}/{self.db})"


def parse_redis_url(url: str) -> RedisURL:
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("Redis URL must use redis://, rediss:// or unix://")
    query = {k: v[0] for k, v in parse_qs(u.query).items() if v}
    username = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password else None
    password = password or query.get("password")
    username = username or query.get("username")
    db = 0
    if u.scheme == "unix":
        return RedisURL(unix_path=unquote(u.path), db=int(query.get("db", 0)), username=username, password=password)
    path = unquote(u.path or "").lstrip("/")
    if "db" in query:  # the query wins over the path, as in redis-py
        db = int(query["db"])
    elif path:
        db = int(path)
    return RedisURL(host=unquote(u.hostname) if u.hostname else "127.0.0.1", port=int(u.port or 6379), db=db,
                    username=username, password=password, ssl=u.scheme == "rediss")
