"""Structure-aware mutations shared by every fuzz target: bytes, JSON values, HTTP requests.

Every function takes a `random.Random` so a run is reproducible from its seed. Mutations are of
valid inputs (the targets' seeds): bit flips, byte edits, truncation, duplication, splicing with
another seed, boundary numbers, huge lengths, bad UTF-8, deep nesting.
"""

from __future__ import annotations

import json
import random

BOUNDARY_NUMBERS = [b"0", b"-0", b"-1", b"1", b"127", b"128", b"255", b"256", b"65535", b"65536", b"2147483647",
                    b"2147483648", b"-2147483649", b"4294967296", b"9007199254740993", b"18446744073709551616",
                    b"99999999999999999999999999999", b"1e308", b"1e309", b"-1e309", b"NaN", b"Infinity", b"0x10",
                    b"1.5", b"00", b"+1", b" 1", b"1_000"]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\x00",
            b"\xef\xbb\xbf", b"\xf0\x9f\x98"]
INTERESTING = [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"=", b"&", b"?", b"%", b"%00",
               b"%ff", b"\\", b'"', b"{", b"}", b"[", b"]", b"\x1e", b"-", b"/", b"..", b"*"]
# Long enough to cross every per-field limit we know of (headers 16 KiB, text 32,000 chars), short
# enough that a million inputs stay within minutes.
MAX_BLOWUP = 40_000


def pick_number(rng: random.Random) -> bytes:
    return rng.choice(BOUNDARY_NUMBERS)


def mutate_bytes(rng: random.Random, data: bytes, *, others: list[bytes] = (), ops: int | None = None) -> bytes:
    """1–4 byte-level edits of `data` (or `ops` of them)."""
    b = bytearray(data)
    for _ in range(ops or rng.choice((1, 1, 1, 2, 2, 3, 4))):
        n = len(b)
        op = rng.randrange(12)
        i = rng.randrange(n + 1) if n else 0
        if op == 0 and n:  # bit flip
            j = rng.randrange(n)
            b[j] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # random byte
            b[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:  # truncate
            del b[i:]
        elif op == 3 and n:  # delete a range
            del b[i:i + rng.randint(1, 16)]
        elif op == 4 and n:  # duplicate a range
            j = rng.randint(i, min(n, i + 64))
            b[i:i] = b[i:j] * rng.randint(1, 8)
        elif op == 5 and others:  # splice with another seed
            o = rng.choice(others)
            k = rng.randrange(len(o) + 1)
            b[i:] = o[k:]
        elif op == 6:
            b[i:i] = pick_number(rng)
        elif op == 7:
            b[i:i] = rng.choice(BAD_UTF8)
        elif op == 8:
            b[i:i] = rng.choice(INTERESTING)
        elif op == 9:  # huge repetition
            b[i:i] = rng.choice((b"A", b"[", b"{", b"\x1e", b"4", b"%41", b"0")) * rng.randint(1000, MAX_BLOWUP)
        elif op == 10 and n:  # replace a digit run with a boundary number
            digits = [k for k in range(n) if 48 <= b[k] <= 57]
            if digits:
                k = rng.choice(digits)
                e = k
                while e < n and 48 <= b[e] <= 57:
                    e += 1
                b[k:e] = pick_number(rng)
        else:  # random bytes
            b[i:i] = rng.randbytes(rng.randint(1, 8))
    return bytes(b)


def nested(rng: random.Random) -> object:
    depth = rng.choice((10, 99, 100, 101, 300, 1000, 5000, 20000))
    inner: object = rng.choice((1, "x", None, {}))
    kind = rng.randrange(3) if depth <= 300 else 2  # deeper than Python's own walkers: as text
    for _ in range(depth if kind < 2 else 0):
        inner = [inner] if kind == 0 else {"a": inner}
    if kind == 2:  # nesting json.dumps would refuse: leave it to the raw form
        return RawJSON(b"[" * depth + b"1" + b"]" * rng.choice((depth, depth - 1, 0)))
    return inner


class RawJSON:
    """A JSON text to splice in as is (json.dumps cannot produce it)."""

    def __init__(self, text: bytes) -> None:
        self.text = text


def weird_value(rng: random.Random) -> object:
    c = rng.randrange(14)
    if c == 0:
        return nested(rng)
    if c == 1:
        return "x" * rng.choice((0, 1, 31999, 32000, 32001, 100_000))
    if c == 2:
        return rng.choice((0, -1, 2**31, 2**63, 2**64, 10**30, 1e308, -1e308, 0.5))
    if c == 3:
        return RawJSON(rng.choice((b"NaN", b"Infinity", b"-Infinity", b"1e999", b"\"\\ud800\"", b"\"\\u0000\"",
                                   b"\"\xff\"", b"01", b"[1,]", b"{\"a\":1,}", b"{\"a\" 1}", b"\"", b"tru")))
    if c == 4:
        return None
    if c == 5:
        return rng.choice((True, False))
    if c == 6:
        return [rng.choice((1, "a", None))] * rng.choice((0, 1, 11, 1000))
    if c == 7:
        return {f"k{i}": i for i in range(rng.choice((0, 1, 100, 5000)))}
    if c == 8:
        return "\ud800" if rng.random() < 0.5 else "\u0000\u202e\ufeff"
    if c == 9:
        return rng.choice(("", " ", "../../etc/passwd", "a" * 300, "%s%s%n", "<script>", "null"))
    if c == 10:
        return {"text": "hi"}
    return rng.choice(("", "x", 0, [], {}))


def dump(value: object) -> bytes:
    """JSON text of `value`, with any RawJSON spliced in and lone surrogates passed through."""
    holes: list[bytes] = []

    def walk(v: object) -> object:
        if isinstance(v, RawJSON):
            holes.append(v.text)
            return f"\x00HOLE{len(holes) - 1}\x00"
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    try:
        text = json.dumps(walk(value), ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        text = b"[" * 3000 + b"]" * 3000
    for k, h in enumerate(holes):
        text = text.replace(f'"\\u0000HOLE{k}\\u0000"'.encode(), h)
    return text


def mutate_json(rng: random.Random, obj: object) -> bytes:
    """A JSON template with one field replaced, removed, retyped or added; sometimes byte-mutated after."""
    obj = json.loads(json.dumps(obj))

    def containers(v: object, out: list) -> list:
        if isinstance(v, (dict, list)):
            out.append(v)
            for x in (v.values() if isinstance(v, dict) else v):
                containers(x, out)
        return out

    spots = containers(obj, [])
    if spots and rng.random() < 0.9:
        c = rng.choice(spots)
        if isinstance(c, dict):
            if c and rng.random() < 0.7:
                k = rng.choice(list(c))
                if rng.random() < 0.2:
                    del c[k]
                else:
                    c[k] = weird_value(rng)
            else:
                c[rng.choice(("extra", "__proto__", "text", "message", "", "x" * 200))] = weird_value(rng)
        elif isinstance(c, list):
            if c and rng.random() < 0.7:
                c[rng.randrange(len(c))] = weird_value(rng)
            else:
                c.append(weird_value(rng))
    else:
        obj = weird_value(rng)
    text = dump(obj)
    if rng.random() < 0.25:
        text = mutate_bytes(rng, text)
    return text
