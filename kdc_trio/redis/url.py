"""`redis://`, `rediss://` and `unix://` URLs, read the way redis-py reads them; and
`redis+cluster://` / `rediss+cluster://` seed lists for a Redis Cluster (`ClusterURL`)."""

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


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class ClusterURL:
    """`redis+cluster://[user:pass@]host:port[,host:port…][?username=…&password=…]`: seed nodes
    (any nodes of the cluster; the rest is discovered) and the credentials every node shares.
    `rediss+cluster://` speaks TLS to every node. A cluster has only database 0."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    def node(self, host: str, port: int) -> RedisURL:
        """The URL of one node, with the cluster's credentials and TLS."""
        return RedisURL(host=host, port=port, username=self.username, password=self.password, ssl=self.ssl)

    def __repr__(self) -> str:  # never print the password
        nodes = ",".join(f"{h}:{p}" for h, p in self.seeds)
        return f"ClusterURL({'rediss' if self.ssl else 'redis'}+cluster://{nodes})"


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad cluster seed {text!r}")
        port = rest[1:] or "6379"
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "6379")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad cluster seed {text!r}: host:port expected")
    return unquote(host), int(port)


def parse_cluster_url(url: str) -> ClusterURL:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("Redis Cluster URL must use redis+cluster:// or rediss+cluster://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    netloc, path_query = rest[:cut], rest[cut:]
    path, _, query = path_query.partition("?")
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0: drop the /db from the URL")
    params = {k: v[0] for k, v in parse_qs(query).items() if v}
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    seeds = tuple(_host_port(h.strip()) for h in hosts.split(",") if h.strip())
    if not seeds:
        raise ValueError("a Redis Cluster URL needs at least one host:port")
    return ClusterURL(seeds=seeds, username=username or params.get("username"),
                      password=password or params.get("password"), ssl=scheme.lower() == "rediss+cluster")
