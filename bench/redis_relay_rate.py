"""How many events/s one kdc-trio gateway relays from Redis to a client, next to what the same
Redis delivers to a bare hiredis subscriber on the same machine, in the same run.

    python3 bench/redis_relay_rate.py [--n 200000] [--size 100] [--runs 3] [--out bench/results]

For each run: a fresh `redis-server` on a free port; `redis-benchmark` publishes N messages
(pipelined) on one session's channel, in the relay's wire format; the receiver is a bare hiredis
subscriber process, or a kdc-trio gateway process (`serve --no-worker`, REDIS_URL set) with one
raw-socket SSE client of that session counting `chat_delta` events. The rate is N over the time
from the first to the last message at the receiver.

Two bare subscribers: `bare` reads 256 KiB at a time and feeds each read to hiredis whole (the
subscriber this bench has always measured: the issue's "bare hiredis subscriber"); `bare tuned`
reads 64 KiB and feeds hiredis 8 KiB at a time, as the gateway does (kdc_trio/redis/connection.py:
hiredis moves its unparsed remainder on every few replies of a whole read, and big reads take
fresh allocator arenas). The runs interleave (bare, bare tuned, gateway; then again), so each
ratio compares receivers measured minutes, not a whole bench, apart: this box's speed drifts.
Each ratio is the median of the runs' own ratios. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.live import LineReader  # noqa: E402
from kdc_trio.relay.message import dumps, head_prefix  # noqa: E402

BARE_SUBSCRIBER = r"""
import socket, sys, time, hiredis
port, channel, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
read_size, feed_size = int(sys.argv[4]), int(sys.argv[5])  # feed_size 0: each read whole
s = socket.create_connection(("127.0.0.1", port))
s.sendall(hiredis.pack_command(("SUBSCRIBE", channel)))
r = hiredis.Reader()
got, first = 0, None
while (m := r.gets()) is False:  # "ready" once Redis confirmed: a message published before is lost
    data = s.recv(65536)
    if not data:
        sys.exit("redis closed the connection before it confirmed the SUBSCRIBE")
    r.feed(data)
assert m[0] == b"subscribe", m
print("ready", flush=True)
while got < n:
    data = s.recv(read_size)
    if not data:
        break
    size = len(data)
    step = feed_size or size
    for offset in range(0, size, step):
        r.feed(data, offset, min(step, size - offset))
        while (m := r.gets()) is not False:
            if m[0] == b"message":
                if first is None:
                    first = time.perf_counter()
                got += 1
print(json.dumps({"received": got, "seconds": time.perf_counter() - first}) if first else "{}", flush=True)
""".replace("import socket,", "import json, socket,")

SSE_CLIENT = r"""
import json, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /sse/stream?stream_id=bench HTTP/1.1\r\nHost: x\r\n\r\n")
buf = b""
while b"event: ready" not in buf or b"\n\n" not in buf.split(b"event: ready", 1)[1]:
    buf += s.recv(65536)
ready = buf.split(b"event: ready", 1)[1].split(b"data: ", 1)[1].split(b"\n", 1)[0]
print(json.dumps({"ready": json.loads(ready)}), flush=True)
got, first, tail = 0, None, b""
marker = b"event: chat_delta"
while got < n:
    data = s.recv(262144)
    if not data:
        break
    if first is None:
        first = time.perf_counter()
    chunk = tail + data
    got += chunk.count(marker)
    tail = chunk[-(len(marker) - 1):]
print(json.dumps({"received": got, "seconds": time.perf_counter() - first}), flush=True)
"""


# Deadlines on the peer processes (a subscriber, redis-benchmark): each step takes well under a
# second on an idle box; these leave a loaded CI box room and still end a stuck step with its name.
READY_TIMEOUT_S = 60
RUN_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, int]:
    port = free_port()
    # the pub/sub output buffer of bench/targets.py's Redis: with Redis's default (32 MB hard) a
    # receiver that falls behind on a busy box is disconnected and the run never completes
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--client-output-buffer-limit", "pubsub 512mb 256mb 60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def publish(port: int, channel: str, payload: str, n: int) -> None:
    subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-P", "64", "-c", "2", "-q",
                    "PUBLISH", channel, payload], check=True, stdout=subprocess.DEVNULL, timeout=RUN_TIMEOUT_S)


def wire(session_id: str, size: int, *, kdcube: bool = False) -> str:
    """One chat_delta as kdc-trio's RedisBus publishes it (the fixed "kdc2" head, data last; seq 0
    so identical copies are not deduplicated), or as a KDCube producer does (`kdcube`)."""
    data = {"type": "chat.delta", "delta": {"text": "x" * size, "marker": "answer", "index": 0}}
    if kdcube:
        head = {"target_sid": None, "session_id": session_id, "event": "chat_delta", "timestamp": 0}
        return json.dumps({**head, "data": data})
    before, after = head_prefix(event="chat_delta", target_sid=None, session_id=session_id, host_id="bench")
    return '{"seq":0' + before + "0" + after + "0," + dumps(data)[1:] + "}"


# (read size, feed size) of the two bare subscribers (see the module's docstring)
BARE = {"bare": (256 * 1024, 0), "bare tuned": (64 * 1024, 8 * 1024)}


def bare_subscriber_rate(port: int, n: int, size: int, kind: str = "bare") -> float:
    """Messages/s a bare hiredis subscriber (`kind`, one of BARE) receives from the Redis on `port`."""
    read_size, feed_size = BARE[kind]
    sub = subprocess.Popen([sys.executable, "-c", BARE_SUBSCRIBER, str(port), "bench", str(n), str(read_size),
                            str(feed_size)], stdout=subprocess.PIPE)
    try:
        reader = LineReader(sub, "the bare hiredis subscriber")
        if reader.line("its SUBSCRIBE confirmed", READY_TIMEOUT_S).strip() != b"ready":
            raise RuntimeError("the bare hiredis subscriber did not say ready")
        publish(port, "bench", wire("s", size), n)
        result = json.loads(reader.line(f"{n} messages received", RUN_TIMEOUT_S))
        if result.get("received", 0) < n:  # it stops at n; fewer: Redis closed on it
            raise RuntimeError(f"the bare subscriber received {result.get('received', 0)} of {n}")
    finally:
        if sub.poll() is None:
            sub.kill()
        sub.wait()
        sub.stdout.close()
    return result["received"] / result["seconds"]


def redis_benchmark_publish_rate(port: int, n: int, size: int) -> float:
    """PUBLISH/s redis-benchmark reaches on the Redis on `port` (no subscriber)."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-P", "64", "-c", "2", "-q",
                          "PUBLISH", "nobody", "x" * size], check=True, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S).stdout
    # "PUBLISH nobody xxx: 123456.79 requests per second, p50=…"
    return float(out.rsplit(": ", 1)[1].split()[0].replace(",", "")) if ": " in out else 0.0


def run_bare(n: int, size: int, kind: str = "bare") -> float:
    redis, port = start_redis()
    try:
        return bare_subscriber_rate(port, n, size, kind)
    finally:
        redis.kill()


def run_gateway(n: int, size: int, kdcube: bool) -> tuple[float, float]:
    redis, rport = start_redis()
    port_file = Path(tempfile.mkdtemp()) / "port"
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{rport}/0", "KDC_PORT": "0", "KDC_LOG_LEVEL": "WARNING",
           "SSE_CLIENT_QUEUE": str(n + 10), "PYTHONPATH": str(ROOT)}
    gw = subprocess.Popen([sys.executable, "-m", "kdc_trio", "serve", "--no-worker", "--port-file", str(port_file)],
                          env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        for _ in range(400):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.025)
        client = subprocess.Popen([sys.executable, "-c", SSE_CLIENT, port_file.read_text(), str(n)],
                                  stdout=subprocess.PIPE, text=True)
        ready = json.loads(client.stdout.readline())["ready"]
        channel = f"kdcube.relay.chatbot.{ready['tenant']}:{ready['project']}:chat.events.{ready['session_id']}"
        time.sleep(0.2)
        cpu0 = _cpu(gw.pid)
        publish(rport, channel, wire(ready["session_id"], size, kdcube=kdcube), n)
        result = json.loads(client.communicate(timeout=300)[0])
        cpu = _cpu(gw.pid) - cpu0
        if result["received"] < n:  # redis-benchmark may overshoot -n by a pipeline
            raise RuntimeError(f"gateway delivered {result['received']} of {n}")
        return result["received"] / result["seconds"], cpu / n * 100_000
    finally:
        gw.terminate()
        gw.wait(timeout=20)
        redis.kill()


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--kdcube-format", action="store_true",
                   help="publish as a KDCube producer does (data not last: decoded and re-encoded)")
    a = p.parse_args()
    bare: dict[str, list[float]] = {kind: [] for kind in BARE}
    gw: list[tuple[float, float]] = []
    for _ in range(a.runs):  # interleaved: see the module's docstring
        for kind in BARE:
            bare[kind].append(run_bare(a.n, a.size, kind))
        gw.append(run_gateway(a.n, a.size, a.kdcube_format))
    rate, cpu = statistics.median(r for r, _ in gw), statistics.median(c for _, c in gw)
    ratios = {kind: statistics.median(g / b for (g, _), b in zip(gw, bare[kind])) for kind in BARE}
    report = {"n": a.n, "size": a.size, "runs": a.runs, "kdcube_format": a.kdcube_format,
              "bare_hiredis_msgs_per_s": bare["bare"], "bare_tuned_hiredis_msgs_per_s": bare["bare tuned"],
              "gateway_sse_events_per_s": [r for r, _ in gw], "gateway_cpu_s_per_100k": [c for _, c in gw],
              "ratio_gateway_to_bare": ratios["bare"], "ratio_gateway_to_bare_tuned": ratios["bare tuned"],
              "cpus": os.cpu_count()}
    print(f"{'receiver':<40}{'events/s (median of ' + str(a.runs) + ')':>26}")
    print(f"{'bare hiredis subscriber (256 KiB reads)':<40}{statistics.median(bare['bare']):>26,.0f}")
    print(f"{'bare tuned (64 KiB reads, 8 KiB feeds)':<40}{statistics.median(bare['bare tuned']):>26,.0f}")
    print(f"{'kdc-trio gateway -> 1 SSE client':<40}{rate:>26,.0f}   ({cpu:.2f} CPU s / 100k events)")
    print(f"ratio gateway / bare: {ratios['bare']:.2f}; gateway / bare tuned: {ratios['bare tuned']:.2f} "
          "(medians of each run's ratio)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"redis-relay-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
