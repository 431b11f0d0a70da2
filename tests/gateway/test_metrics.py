"""`/metrics` through prometheus-client, and a request id on every log line of a request."""

from __future__ import annotations

import gc
import io
import json
import logging

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from kdc_trio.logs import setup_logging
from tests.support.gateway import running_gateway, test_settings
from tests.support.sse_client import open_stream


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_connections_events_turns_and_observe_latency():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"message": "hi"})
            assert r.status_code == 202
            await st.wait_event("chat_complete", timeout=20)
            await st.wait_for(lambda s: any(e.data["data"]["state"] == "idle" for e in s.of("conv_status")))
            resp = await client.get("/metrics")
            nursery.cancel_scope.cancel()
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = _samples(resp.text)
    assert m[("kdc_connections", (("transport", "sse"),))] == 1
    assert m[("kdc_connections", (("transport", "socketio"),))] == 0
    assert m[("kdc_sessions", ())] == 1
    assert m[("kdc_turns_total", (("outcome", "accepted"),))] == 1
    assert m[("kdc_turns_total", (("outcome", "success"),))] == 1
    delivered = sum(1 for e in st.events if e.id)
    assert m[("kdc_events_delivered_total", ())] >= delivered
    assert m[("kdc_events_published_total", ())] >= delivered
    assert m[("kdc_delivery_latency_seconds_count", ())] >= delivered
    assert m[("kdc_turn_duration_seconds_count", (("outcome", "success"),))] == 1
    assert m[("kdc_turn_duration_seconds_sum", (("outcome", "success"),))] > 0
    assert ("kdc_outbox_depth", ()) in m and ("kdc_slow_consumer_closes_total", ()) in m
    assert m[("kdc_deltas_merged_total", ())] == 0, "a client that keeps up gets every delta as it was sent"
    assert ("process_resident_memory_bytes", ()) in m, "the process collector is registered"


async def test_every_log_line_of_a_request_carries_its_request_id():
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging(test_settings(log_format="json"), stream=out)
    try:
        async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            r = await client.get("/nope", headers={"x-request-id": "edge-42"})
            assert r.headers["x-request-id"] == "edge-42", "a plain client id is kept"
            bad = await client.get("/health", headers={"x-request-id": "no spaces\tor tabs allowed"})
            assert bad.headers["x-request-id"] != "no spaces\tor tabs allowed"
            fresh = [(await client.get("/health")).headers["x-request-id"] for _ in range(2)]
            assert fresh[0] != fresh[1]
            # A crashing handler logs a traceback: the line carries the request's id.
            gw.router.add("GET", "/crash", _crash)
            r = await client.get("/crash", headers={"x-request-id": "crash-1"})
            assert r.status_code == 500 and r.headers["x-request-id"] == "crash-1"
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    crashed = [d for d in lines if "handler crashed" in d["msg"]]
    assert crashed and all(d["request_id"] == "crash-1" for d in crashed)
    assert all("request_id" not in d for d in lines if "listening on" in d["msg"]), "no request, no id"


async def _crash(req, ex):
    raise ValueError("boom")


def test_the_delivery_histogram_exposes_what_prometheus_client_would():
    """Our lock-free histogram against prometheus-client's own Histogram as the oracle: the same
    latencies (on bucket bounds, between them, past the last, negative clock skew) render the
    same exposition lines."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from kdc_trio.metrics import DELIVERY_BUCKETS, DeliveryHistogram

    now = 1000.0
    lat = [0.0, 0.0005, 0.0007, 0.001, 0.003, 0.05, 0.2, 4.9, 5.0, 7.5, 120.0, -0.002]
    ours_reg, theirs_reg = CollectorRegistry(), CollectorRegistry()
    ours = DeliveryHistogram("kdc_x_seconds", "doc", DELIVERY_BUCKETS)
    ours_reg.register(ours)
    theirs = Histogram("kdc_x_seconds", "doc", buckets=DELIVERY_BUCKETS, registry=theirs_reg)
    ours.observe_since(now, [SimpleNamespace(timestamp=now - v) for v in lat[:5]])
    ours.observe_since(now, [SimpleNamespace(timestamp=now - v) for v in lat[5:]] + [SimpleNamespace(timestamp=0)])
    for v in lat:
        theirs.observe(max(0.0, v))
    rendered = [generate_latest(r).decode().splitlines() for r in (ours_reg, theirs_reg)]
    keep = [[ln for ln in lines if ln.startswith(("kdc_x_seconds_bucket", "kdc_x_seconds_count"))] for lines in rendered]
    assert keep[0] == keep[1] and len(keep[0]) == len(DELIVERY_BUCKETS) + 2
    sums = [float(next(ln for ln in lines if ln.startswith("kdc_x_seconds_sum")).split()[1]) for lines in rendered]
    assert abs(sums[0] - sums[1]) < 1e-9, sums  # float sums in another order


async def test_metrics_show_the_collectors_pauses_by_generation():
    """`kdc_gc_pause_seconds{generation}` counts every collection of the process, full ones
    (generation 2) included: one forced here between two scrapes shows up, with its time."""
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        before = _samples((await client.get("/metrics")).text)
        garbage = [[] for _ in range(50_000)]
        for a, b in zip(garbage, garbage[1:]):
            a.append(b)
            b.append(a)  # cycles: only the collector frees them
        del garbage, a, b
        gc.collect()
        after = _samples((await client.get("/metrics")).text)
    full = (("generation", "2"),)
    assert after[("kdc_gc_pause_seconds_count", full)] >= before[("kdc_gc_pause_seconds_count", full)] + 1
    assert after[("kdc_gc_pause_seconds_sum", full)] > before[("kdc_gc_pause_seconds_sum", full)]
    assert after[("kdc_gc_pause_seconds_bucket", (*full, ("le", "+Inf")))] == after[("kdc_gc_pause_seconds_count", full)]
    for generation in ("0", "1"):
        assert ("kdc_gc_pause_seconds_count", (("generation", generation),)) in after
