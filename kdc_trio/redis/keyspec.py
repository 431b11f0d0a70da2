"""Where a command's keys are, so the cluster client can route it (pure: no I/O).

`command_keys(args)` returns the keys (or, for `SPUBLISH`/`SSUBSCRIBE`, the shard channels) of
one command, `[]` for a command without keys (it may go to any node), and raises
`UnknownCommand` for a command this table does not know: routing it by a guess could send a
write to the wrong node, so an unlisted command fails loudly and is added here.

The table covers every command kdc-trio sends (the stores, the relay, the queue, the tests'
helpers) plus the common neighbours of each family. `BROADCAST` commands go to every master.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


class UnknownCommand(ValueError):
    """The cluster client does not know where this command's keys are."""


def _name(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", "replace").upper()
    return str(value).upper()


def _first(args: Sequence[Any]) -> list[Any]:
    return [args[1]] if len(args) > 1 else []


def _all(args: Sequence[Any]) -> list[Any]:
    return list(args[1:])


def _every_other(args: Sequence[Any]) -> list[Any]:  # MSET k v k v
    return list(args[1::2])


def _second(args: Sequence[Any]) -> list[Any]:  # XGROUP CREATE key …, XINFO STREAM key, OBJECT ENCODING key
    return [args[2]] if len(args) > 2 else []


def _numkeys(args: Sequence[Any]) -> list[Any]:  # EVAL script numkeys k1 … a1 …
    n = int(args[2]) if len(args) > 2 else 0
    return list(args[3:3 + n])


def _streams(args: Sequence[Any]) -> list[Any]:  # XREAD[GROUP] … STREAMS k1 k2 id1 id2
    for i, a in enumerate(args):
        if _name(a) == "STREAMS":
            rest = args[i + 1:]
            return list(rest[:len(rest) // 2])
    return []


def _none(args: Sequence[Any]) -> list[Any]:
    return []


_FIRST = """GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX APPEND STRLEN INCR INCRBY INCRBYFLOAT DECR DECRBY
EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST TTL PTTL TYPE DUMP RESTORE
HSET HSETNX HMSET HGET HMGET HGETALL HDEL HEXISTS HINCRBY HINCRBYFLOAT HKEYS HVALS HLEN HSCAN
LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LRANGE LLEN LINDEX LSET LREM LTRIM LPOS
SADD SREM SMEMBERS SISMEMBER SCARD SPOP SRANDMEMBER SSCAN
ZADD ZREM ZSCORE ZINCRBY ZCARD ZCOUNT ZRANGE ZRANGEBYSCORE ZREVRANGE ZREVRANGEBYSCORE ZRANK ZREVRANK
ZREMRANGEBYSCORE ZREMRANGEBYRANK ZPOPMIN ZPOPMAX ZSCAN ZMSCORE
XADD XLEN XRANGE XREVRANGE XDEL XTRIM XACK XCLAIM XAUTOCLAIM XPENDING XSETID
SPUBLISH""".split()
_ALL = "DEL UNLINK EXISTS MGET TOUCH WATCH".split()
_KEYLESS = """PING ECHO TIME INFO CLUSTER READONLY READWRITE ASKING CLIENT CONFIG COMMAND MEMORY LASTSAVE
PUBLISH PUBSUB MULTI EXEC DISCARD UNWATCH WAIT ROLE""".split()
# Sent to every master: they change (or read) every node's state. Replies: see ClusterClient.
BROADCAST = frozenset("SCRIPT FLUSHDB FLUSHALL KEYS DBSIZE".split())

KEYS: dict[str, Callable[[Sequence[Any]], list[Any]]] = {
    **{c: _first for c in _FIRST}, **{c: _all for c in _ALL}, **{c: _none for c in _KEYLESS},
    "MSET": _every_other, "MSETNX": _every_other,
    "EVAL": _numkeys, "EVALSHA": _numkeys, "EVAL_RO": _numkeys, "EVALSHA_RO": _numkeys, "FCALL": _numkeys,
    "FCALL_RO": _numkeys,
    "XREAD": _streams, "XREADGROUP": _streams,
    "XGROUP": _second, "XINFO": _second, "OBJECT": _second,
}


def command_name(args: Sequence[Any]) -> str:
    return _name(args[0]) if args else ""


def command_keys(args: Sequence[Any]) -> list[Any]:
    name = command_name(args)
    if name in BROADCAST:
        return []
    try:
        where = KEYS[name]
    except KeyError:
        raise UnknownCommand(f"the cluster client does not know where the keys of {name or '(empty)'} are "
                             "(add it to kdc_trio/redis/keyspec.py)") from None
    return where(args)
