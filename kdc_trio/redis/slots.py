"""Redis Cluster slot arithmetic and topology replies, without I/O.

- `key_slot(key)`: CRC16/XMODEM of the key (or of its `{hash tag}`) mod 16384, exactly as the
  Redis Cluster specification's `HASH_SLOT` (the first `{`, the first `}` after it, and a
  non-empty tag between them; otherwise the whole key).
- `SlotMap`: an immutable slot → shard table built from a `CLUSTER SHARDS` (Redis ≥ 7.0) or
  `CLUSTER SLOTS` reply (raw RESP2, as our clients return it). A shard is its master's address
  plus its replicas' addresses.
- `parse_redirect(text)`: a `MOVED` / `ASK` error reply's slot and address, or None.

Addresses are `(host, port)` tuples. A node that announces no usable host (`?` or an empty
endpoint) is given the host we reached the cluster by (`default_host`), as redis-py does.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

SLOTS = 16384  # the number of hash slots in every Redis Cluster

Address = tuple[str, int]


def crc16(data: bytes) -> int:
    """CRC16/XMODEM (poly 0x1021, init 0, no reflection), the cluster specification's CRC;
    `binascii.crc_hqx` computes exactly that, in C."""
    return binascii.crc_hqx(data, 0)


def _as_bytes(key: str | bytes | bytearray | memoryview | int | float) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        return str(key).encode()  # hiredis sends numbers as their decimal text
    raise TypeError(f"a Redis key must be str or bytes, not {type(key).__name__}")


def hash_tag(key: str | bytes) -> bytes:
    """The part of `key` that is hashed: the first non-empty `{…}` section, else the whole key."""
    data = _as_bytes(key)
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            return data[start + 1:end]
    return data


def key_slot(key: str | bytes) -> int:
    return crc16(hash_tag(key)) % SLOTS


@dataclass(frozen=True)
class Shard:
    master: Address
    replicas: tuple[Address, ...] = ()


@dataclass(frozen=True)
class SlotMap:
    """Slot → shard. `ranges` are sorted, non-overlapping `(first, last, shard)`; uncovered
    slots have no owner (`owner()` is None: the cluster is not fully covered)."""

    ranges: tuple[tuple[int, int, Shard], ...]

    def __post_init__(self) -> None:
        last = -1
        for first, end, _ in self.ranges:
            if not (0 <= first <= end < SLOTS) or first <= last:
                raise ValueError(f"bad or overlapping slot range {first}-{end}")
            last = end

    def shard(self, slot: int) -> Shard | None:
        lo, hi = 0, len(self.ranges) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            first, end, shard = self.ranges[mid]
            if slot < first:
                hi = mid - 1
            elif slot > end:
                lo = mid + 1
            else:
                return shard
        return None

    def owner(self, slot: int) -> Address | None:
        shard = self.shard(slot)
        return shard.master if shard else None

    @property
    def masters(self) -> tuple[Address, ...]:
        seen: dict[Address, None] = {}
        for _, _, shard in self.ranges:
            seen.setdefault(shard.master)
        return tuple(seen)

    @property
    def shards(self) -> tuple[Shard, ...]:
        seen: dict[Address, Shard] = {}
        for _, _, shard in self.ranges:
            seen.setdefault(shard.master, shard)
        return tuple(seen.values())

    @property
    def covered(self) -> int:
        return sum(end - first + 1 for first, end, _ in self.ranges)

    def with_owner(self, slot: int, master: Address) -> "SlotMap":
        """This map with one slot moved to `master` (what a MOVED reply tells us)."""
        if self.owner(slot) == master:
            return self
        target = next((s for s in self.shards if s.master == master), Shard(master))
        return SlotMap(_joined(_overlay(self.ranges, slot, slot, target)))

    @classmethod
    def build(cls, ranges: Iterable[tuple[int, int, Shard]]) -> "SlotMap":
        """From ranges in any order (overlaps refused); adjacent ranges of one shard are joined,
        so two maps that assign every slot alike are equal."""
        return cls(_joined(cls(tuple(sorted(ranges, key=lambda r: r[0]))).ranges))


Range = tuple[int, int, Shard]


def _overlay(ranges: Iterable[Range], first: int, end: int, shard: Shard) -> list[Range]:
    """`ranges` with slots first..end given to `shard`."""
    out: list[Range] = []
    for a, b, sh in ranges:
        if b < first or a > end:
            out.append((a, b, sh))
            continue
        if a < first:
            out.append((a, first - 1, sh))
        if b > end:
            out.append((end + 1, b, sh))
    out.append((first, end, shard))
    out.sort(key=lambda r: r[0])
    return out


def _joined(ranges: Iterable[Range]) -> tuple[Range, ...]:
    out: list[Range] = []
    for a, b, sh in ranges:
        if out and out[-1][1] + 1 == a and out[-1][2] == sh:
            out[-1] = (out[-1][0], b, sh)
        else:
            out.append((a, b, sh))
    return tuple(out)


def claimed_slots(views: Mapping[Address, SlotMap]) -> int:
    """How many slots some node in `views` claims as its own (16384: every owner has spoken)."""
    ranges: list[Range] = []
    for node, view in views.items():
        for first, end, shard in view.ranges:
            if shard.master == node:
                ranges = _overlay(ranges, first, end, shard)
    return sum(end - first + 1 for first, end, _ in ranges)


def merge_views(views: Mapping[Address, SlotMap]) -> SlotMap:
    """One map from what several nodes said (`views`: node asked → its CLUSTER SHARDS).

    Nodes disagree while a change spreads by gossip (a slot migrated, a replica promoted): a node
    that has not heard of it yet still names the old owner. A node is the authority on the slots
    it serves itself, so every range a node claims as its own (it is that range's master in its
    own view) goes to it; slots nobody claims keep the owner the most complete view gives. Two
    nodes claiming one slot (a partitioned old master): the claim more views agree with wins."""
    if not views:
        return SlotMap(())
    base = max(views.values(), key=lambda m: m.covered)
    claims = [(first, end, shard) for node, view in views.items() for first, end, shard in view.ranges
              if shard.master == node]
    claims.sort(key=lambda c: sum(1 for v in views.values() if v.owner(c[0]) == c[2].master))
    ranges: list[Range] = list(base.ranges)
    for first, end, shard in claims:  # the best-supported claim last: it wins an overlap
        ranges = _overlay(ranges, first, end, shard)
    return SlotMap(_joined(ranges))


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _host(value: Any, default_host: str) -> str:
    host = _text(value) if value is not None else ""
    return default_host if host in ("", "?") else host


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    if not isinstance(flat, (list, tuple)) or len(flat) % 2:
        raise ValueError("expected a flat key/value list")
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def parse_cluster_shards(reply: Any, default_host: str = "127.0.0.1", *, tls: bool = False) -> SlotMap:
    """`CLUSTER SHARDS` (RESP2): a list of `[slots, [a, b, …], nodes, [node-map, …]]`.

    Failed nodes (`health` other than `online`) are ignored, so a promoted replica, not its dead
    former master, is the shard's master. A shard without an online master owns no slots here."""
    if not isinstance(reply, (list, tuple)):
        raise ValueError("CLUSTER SHARDS reply is not a list")
    ranges: list[tuple[int, int, Shard]] = []
    for entry in reply:
        shard_info = _pairs(entry)
        bounds = [int(x) for x in shard_info.get("slots") or []]
        if len(bounds) % 2:
            raise ValueError("CLUSTER SHARDS slot bounds come in pairs")
        master: Address | None = None
        replicas: list[Address] = []
        for node in shard_info.get("nodes") or []:
            info = _pairs(node)
            if _text(info.get("health", "online")) != "online":
                continue
            # a TLS client wants the node's `tls-port` (a `tls-cluster` node reports both)
            ports = ("tls-port", "port") if tls else ("port", "tls-port")
            port = int(info.get(ports[0]) or info.get(ports[1]) or 0)
            host = _host(info.get("endpoint") or info.get("ip"), default_host)
            if not port:
                continue
            if _text(info.get("role")) == "master":
                master = (host, port)
            else:
                replicas.append((host, port))
        if master is None or not bounds:
            continue
        shard = Shard(master, tuple(replicas))
        ranges.extend((bounds[i], bounds[i + 1], shard) for i in range(0, len(bounds), 2))
    return SlotMap.build(ranges)


def parse_cluster_slots(reply: Any, default_host: str = "127.0.0.1") -> SlotMap:
    """`CLUSTER SLOTS` (RESP2): `[[first, last, [host, port, id, …], [replica…]…], …]`."""
    if not isinstance(reply, (list, tuple)):
        raise ValueError("CLUSTER SLOTS reply is not a list")
    ranges: list[tuple[int, int, Shard]] = []
    for entry in reply:
        if not isinstance(entry, (list, tuple)) or len(entry) < 3:
            raise ValueError("CLUSTER SLOTS entry needs first, last and a master")
        nodes = [(_host(n[0], default_host), int(n[1])) for n in entry[2:]]
        ranges.append((int(entry[0]), int(entry[1]), Shard(nodes[0], tuple(nodes[1:]))))
    return SlotMap.build(ranges)


@dataclass(frozen=True)
class Redirect:
    kind: str  # "MOVED" or "ASK"
    slot: int
    address: Address


def parse_redirect(text: str | bytes | BaseException, default_host: str = "127.0.0.1") -> Redirect | None:
    """`MOVED 3999 127.0.0.1:6381` / `ASK 3999 [::1]:6381` → Redirect; anything else → None.

    An empty host (`MOVED 3999 :6381`, a node without a known endpoint) means `default_host`."""
    if isinstance(text, BaseException):
        text = str(text)
    words = _text(text).split()
    if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
        return None
    host, sep, port = words[2].rpartition(":")
    if not sep or not port.isdigit() or not words[1].isdigit():
        return None
    slot = int(words[1])
    if slot >= SLOTS:
        return None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return Redirect(words[0], slot, (host or default_host, int(port)))


# Characters a slot tag is made of: short, printable, never a brace.
_TAG_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_slot_tags: dict[int, str] = {}


def slot_tag(slot: int) -> str:
    """The shortest alphanumeric string whose CRC16 lands in `slot` (`{<it>}` puts a key there)."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot {slot} out of range")
    if not _slot_tags:
        n = len(_TAG_ALPHABET)
        for length in (1, 2, 3):  # 62 + 3844 + 238328 candidates cover all 16384 slots
            for i in range(n ** length):
                chars = []
                for _ in range(length):
                    i, r = divmod(i, n)
                    chars.append(_TAG_ALPHABET[r])
                tag = "".join(chars)
                _slot_tags.setdefault(crc16(tag.encode()) % SLOTS, tag)
            if len(_slot_tags) == SLOTS:
                break
    return _slot_tags[slot]


def tag_for(name: str) -> str:
    """A `{hash tag}` that puts a key in the slot `name` hashes to (e.g. a pub/sub channel's).

    `{<the part of name that is hashed>}` when that part can be braced (it holds no `}`), so keys
    stay readable; otherwise `{<slot_tag>}`. Either way key_slot(f"x:{tag_for(n)}:y") ==
    key_slot(n)."""
    part = hash_tag(name)
    if b"}" not in part and part:
        return "{" + part.decode("utf-8", "surrogateescape") + "}"
    return "{" + slot_tag(key_slot(name)) + "}"


def tagged(name: str) -> str:
    """`name` made into a key part that hashes to `key_slot(name)` and still names it uniquely:
    `{name}` when that is a valid tag of the whole name, else `{<tag>}name`. Keys built as
    `prefix:kind:<tagged(x)>[:suffix]` for one `x` share a slot — the slot of `x` itself."""
    tag = tag_for(name)
    return tag if tag == "{" + name + "}" else tag + name
