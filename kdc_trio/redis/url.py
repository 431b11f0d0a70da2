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


# ---- redis+sentinel:// (a master found through Redis Sentinel; see kdc_trio/redis/sentinel.py) ----

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
# How long one Sentinel may take to connect and name the master before the next one is asked:
# a Sentinel is on the local network and answers from memory, so a slow one is as good as down.
SENTINEL_TIMEOUT_S = 1.0
# How long new connections wait for a promotion a Sentinel announced to finish (the master's
# switch) before they go where the Sentinels point: a promotion takes ~1-2 s.
FAILOVER_HOLD_S = 5.0
SENTINEL_OPTIONS = {"db", "username", "password", "sentinel_username", "sentinel_password", "sentinel_timeout",
                    "failover_hold"}


@dataclass(frozen=True)
class SentinelURL:
    """`redis+sentinel://[user:pass@]host:port[,host:port…]/mastername[/db][?options]`.

    The hosts are Sentinels (port 26379 when omitted), asked in turn for the address of the
    master `mastername`. `user:pass` (or `?username=&password=`) are the master's credentials;
    Sentinels that need their own say so with `?sentinel_username=&sentinel_password=`.
    `?sentinel_timeout=` (seconds, default SENTINEL_TIMEOUT_S) bounds each Sentinel's answer;
    `?failover_hold=` (seconds, default FAILOVER_HOLD_S) how long new connections wait for a
    promotion under way;
    `?db=` or the path's last part selects the database. `rediss+sentinel://` uses TLS for the
    Sentinels and the master alike."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    sentinel_timeout: float = SENTINEL_TIMEOUT_S
    failover_hold: float = FAILOVER_HOLD_S
    ssl: bool = False

    def master_url(self, host: str, port: int) -> RedisURL:
        return RedisURL(host=host, port=port, db=self.db, username=self.username, password=self.password,
                        ssl=self.ssl)

    def sentinel_url(self, host: str, port: int) -> RedisURL:
        return RedisURL(host=host, port=port, username=self.sentinel_username, password=self.sentinel_password,
                        ssl=self.ssl)

    def __repr__(self) -> str:  # never print a password
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"SentinelURL({'rediss' if self.ssl else 'redis'}+sentinel://{hosts}/{self.master}/{self.db})"


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def _sentinel_address(text: str) -> tuple[str, int]:
    """`host`, `host:port` or `[ipv6]:port` of one Sentinel."""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"bad Sentinel address {text!r}: [ipv6]:port expected")
    elif text.count(":") > 1:
        raise ValueError(f"bad Sentinel address {text!r}: write an IPv6 host as [addr]:port")
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    port = rest[1:] if rest else str(SENTINEL_PORT)
    if not host or not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad Sentinel address {text!r}: host:port expected")
    return unquote(host), int(port)


def _seconds(options: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(options.get(name, default))
    except ValueError:
        raise ValueError(f"bad {name} {options[name]!r}: seconds expected") from None
    if not 0 < value < 3600:
        raise ValueError(f"{name} must be above 0 seconds (and under an hour)")
    return value


def parse_sentinel_url(url: str) -> SentinelURL:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError("a Sentinel URL must use redis+sentinel:// or rediss+sentinel://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    options: dict[str, str] = {}
    for k, v in parse_qs(query, keep_blank_values=True).items():
        if k not in SENTINEL_OPTIONS:
            raise ValueError(f"unknown Sentinel URL option {k!r} (known: {', '.join(sorted(SENTINEL_OPTIONS))})")
        options[k] = v[-1]
    if not hosts:
        raise ValueError("a Sentinel URL needs at least one Sentinel host[:port]")
    sentinels = tuple(_sentinel_address(h.strip()) for h in hosts.split(","))
    parts = [unquote(p) for p in path.split("/")] if path else []
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash
    if not parts or not parts[0] or len(parts) > 2:
        raise ValueError("a Sentinel URL's path is /mastername or /mastername/db")
    db_text = options.get("db", parts[1] if len(parts) == 2 else "0")
    if not db_text.isdigit():
        raise ValueError(f"bad database number {db_text!r} in a Sentinel URL")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username, password = unquote(user) or None, (unquote(pw) or None) if colon else None
    timeout = _seconds(options, "sentinel_timeout", SENTINEL_TIMEOUT_S)
    hold = _seconds(options, "failover_hold", FAILOVER_HOLD_S)
    return SentinelURL(sentinels=sentinels, master=parts[0], db=int(db_text),
                       username=username or options.get("username") or None,
                       password=password or options.get("password") or None,
                       sentinel_username=options.get("sentinel_username") or None,
                       sentinel_password=options.get("sentinel_password") or None,
                       sentinel_timeout=timeout, failover_hold=hold, ssl=scheme.lower() == "rediss+sentinel")


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
