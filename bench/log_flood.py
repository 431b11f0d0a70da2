"""Probe: a flood of big turns against a `kdc-trio serve` process; its RSS and a victim's replay.

    python3 bench/log_flood.py [--seconds 15] [--concurrency 32] [--chars 32000] [--env K=V ...]

Starts the server (memory relay unless REDIS_URL is in --env), opens a victim session and posts
one short turn on it (its events are logged), then posts turns of `--chars` characters from
fresh anonymous sessions (one each) for `--seconds`. Prints the server's RSS before and after, the turns
posted, and how many events the victim's `Last-Event-ID: 0` replay returns before and after
the flood (with the `stream.gap` notice if one is sent). Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import redis
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import KdcProcess  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def replay(client: httpx.AsyncClient, sid: str, settle_s: float = 1.0) -> list[dict]:
    """Events a `Last-Event-ID: 0` stream gets within `settle_s` (ready excluded)."""
    events: list[dict] = []
    with trio.move_on_after(settle_s):
        async with client.stream("GET", f"/sse/stream?stream_id=victim&user_session_id={sid}",
                                 headers={"last-event-id": "0"}) as r:
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event != "ready":
                    events.append({"event": event, "data": json.loads(line[5:])})
    return events


async def main(args: argparse.Namespace) -> None:
    env = dict(kv.split("=", 1) for kv in args.env)
    proc = KdcProcess("serve", {"KDC_LOG_LEVEL": "WARNING", "KDC_RELAY_LINGER_MS": "0", **env}).wait_ready()
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=30) as client:
            async with client.stream("GET", "/sse/stream?stream_id=victim") as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        sid = json.loads(line[5:])["session_id"]
                        break
            await client.post(f"/sse/chat?stream_id=victim&user_session_id={sid}", json={"message": "hi"})
            await trio.sleep(2)
            before = await replay(client, sid)
            rss0 = rss_mb(proc.proc.pid)
            r = redis.Redis.from_url(env["REDIS_URL"]) if "REDIS_URL" in env else None
            mem0 = r.info("memory")["used_memory"] / 2**20 if r else 0.0
            text = "y" * args.chars
            posted = 0
            deadline = time.monotonic() + args.seconds

            async def poster() -> None:
                nonlocal posted
                async with httpx.AsyncClient(base_url=proc.base_url, timeout=30) as own:
                    while time.monotonic() < deadline:
                        own.cookies.clear()  # no sticky session cookie: every turn in a new session
                        r = await own.post("/sse/chat?stream_id=flood", json={"message": text})
                        posted += r.status_code == 202

            async with trio.open_nursery() as nursery:
                for _ in range(args.concurrency):
                    nursery.start_soon(poster)
            await trio.sleep(3)  # let the queued turns finish
            rss1 = rss_mb(proc.proc.pid)
            if r:
                mem1 = r.info("memory")["used_memory"] / 2**20
                total = int(r.get(env.get("KDC_REDIS_PREFIX", "kdc") + ":logbytes:total") or 0)
            after = await replay(client, sid)
            metrics = (await client.get("/metrics")).text
        gaps = [e for e in after if e["event"] == "chat_service" and e["data"].get("type") == "stream.gap"]
        print("victim events:", [e["event"] for e in before])
        print(f"turns posted: {posted} in {args.seconds}s of {args.chars} chars")
        print(f"RSS: {rss0:.0f} MB -> {rss1:.0f} MB")
        if r:
            print(f"Redis used_memory: {mem0:.0f} MB -> {mem1:.0f} MB; session logs {total / 2**20:.1f} MiB")
        print(f"victim replay: {len(before)} events before, {len(after) - len(gaps)} after"
              f"{' (told stream.gap first_seq=%s)' % gaps[0]['data']['data']['first_seq'] if gaps else ''}")
        for line in metrics.splitlines():
            if "log" in line:
                print(line)
    finally:
        proc.kill()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--chars", type=int, default=32_000)
    p.add_argument("--env", nargs="*", default=[])
    trio.run(main, p.parse_args())
