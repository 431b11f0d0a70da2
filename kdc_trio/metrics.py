"""`/metrics`: prometheus-client's registry and exposition, one registry per gateway.

Counters and gauges are read at scrape time from the objects that already count (server, relay,
bus, pub/sub, processor): nothing is incremented on the hot path for them. The two histograms are
observed where the time is known: delivery latency once per relayed event (one `time.time()` per
batch, a bucket bisect per event), turn duration once per turn.

Each gateway has its own `CollectorRegistry` (tests run many gateways in one process; the global
registry would mix them); the default process/platform collectors are added to it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterable

import trio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kdc_trio.util.gc_pauses import GcPauses

if TYPE_CHECKING:
    from kdc_trio.relay.message import RelayMessage

# The classic text format every Prometheus version scrapes (newer clients default to 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Producer → gateway hand-off latency: a token stream wants single-digit ms; anything past a
# second is an outage. Buckets in seconds.
DELIVERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A turn lasts from under a second (an error) to minutes (a long agent run; KDC_TURN_TIMEOUT_S).
TURN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TURN_OUTCOMES = ("success", "error", "timeout", "cancelled", "retry")


class GatewayMetrics:
    """The registry of one gateway; `source` is the composed gateway (read-only use)."""

    def __init__(self, source: Any) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_GatewayCollector(source))
        self.delivery = DeliveryHistogram(
            "kdc_delivery_latency_seconds", "Producer publish → handed to the connections' outboxes",
            DELIVERY_BUCKETS)
        self.registry.register(self.delivery)
        self.turn_duration = Histogram(
            "kdc_turn_duration_seconds", "A turn's run time in a worker, by outcome", ["outcome"],
            buckets=TURN_BUCKETS, registry=self.registry)
        self._turn_children = {o: self.turn_duration.labels(outcome=o) for o in TURN_OUTCOMES}
        self.registry.register(_GcPauseCollector(GcPauses.installed()))
        self.turns = {o: 0 for o in TURN_OUTCOMES}

    def observe_batch(self, batch: "list[RelayMessage]") -> None:
        """Delivery latency of one relay batch (producer timestamps are wall-clock seconds)."""
        self.delivery.observe_since(time.time(), batch)

    def turn_finished(self, outcome: str, duration_s: float) -> None:
        if outcome not in self._turn_children:
            outcome = "error"
        self.turns[outcome] += 1
        self._turn_children[outcome].observe(duration_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DeliveryHistogram(Collector):
    """A histogram for the relay's hot path: a bucket bisect and two additions per event, no
    lock (everything runs on the one trio thread; a scrape reads it from the same thread).
    prometheus-client's Histogram.observe costs ~10x that (its locks and bucket loop)."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc = name, doc
        self.bounds = list(buckets)
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe_since(self, now: float, batch: "Iterable[RelayMessage]") -> None:
        bounds, counts, total = self.bounds, self.counts, 0.0
        for msg in batch:
            if msg.timestamp:
                v = now - msg.timestamp
                if v < 0.0:
                    v = 0.0
                counts[bisect_left(bounds, v)] += 1
                total += v
        self.sum += total

    def collect(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.doc, buckets=_cumulative(self.bounds, self.counts),
                                    sum_value=self.sum)


def _cumulative(bounds: list[float], counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts (the last above every bound) as Prometheus' cumulative buckets."""
    out, acc = [], 0
    for bound, n in zip([*map(floatToGoString, bounds), "+Inf"], counts):
        acc += n
        out.append((bound, acc))
    return out


class _GcPauseCollector(Collector):
    """`kdc_gc_pause_seconds{generation}`: the process's collector pauses (util/gc_pauses.py)."""

    def __init__(self, pauses: GcPauses) -> None:
        self.pauses = pauses

    def collect(self) -> Iterable[HistogramMetricFamily]:
        p = self.pauses
        family = HistogramMetricFamily("kdc_gc_pause_seconds", "Time the garbage collector stopped this process, "
                                       "per collection, by generation (2: a full collection)", labels=["generation"])
        for generation in range(3):
            family.add_metric([str(generation)], _cumulative(p.bounds, p.counts[generation]), p.sums[generation])
        yield family


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc, labels=list(labels or ()))
    m.add_metric(list((labels or {}).values()), value)
    return m


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _GatewayCollector(Collector):
    def __init__(self, gw: Any) -> None:
        self.gw = gw

    def collect(self) -> Iterable[Any]:
        gw = self.gw
        c = gw.counters
        conns = GaugeMetricFamily("kdc_connections", "Open connections by transport", labels=["transport"])
        conns.add_metric(["tcp"], gw.server.connections)
        conns.add_metric(["sse"], c.sse_streams)
        conns.add_metric(["socketio"], c.sio_sockets)
        yield conns
        rs = gw.relay.statistics()
        yield _gauge("kdc_sessions", "Sessions with at least one connection in this process", rs["sessions"])
        bs = gw.bus.statistics()
        yield _gauge("kdc_subscribed_channels", "Session channels this process is subscribed to",
                     bs.get("subscribed_channels", bs.get("subscribed_sessions", 0)))
        yield _counter("kdc_events_published", "Events published by this process's producers", bs.get("published", 0))
        yield _counter("kdc_events_delivered", "Events handed to connections' outboxes (one per connection)",
                       rs["delivered"])
        yield _counter("kdc_stream_gaps", "Resumes told stream.gap: their resume point was no longer logged",
                       rs.get("gaps_told", 0) + bs.get("log_gaps", 0))
        if "log_bytes" in bs:  # the memory bus's logs (through Redis they live in Redis)
            yield _gauge("kdc_session_log_bytes", "Bytes held by this process's session replay logs",
                         bs["log_bytes"])
        depth, deepest = _outbox_depths(gw.relay)
        yield _gauge("kdc_outbox_depth", "Events waiting in all connections' outboxes", depth)
        yield _gauge("kdc_outbox_depth_max", "Events waiting in the fullest outbox", deepest)
        yield _counter("kdc_slow_consumer_closes", "Connections closed because their outbox overflowed",
                       c.closed_slow)
        yield _counter("kdc_deltas_merged", "Deltas joined to the one queued before them in a slow connection's outbox",
                       rs.get("merged", 0))
        yield _gauge("kdc_trio_tasks", "Trio tasks alive in this process (bench/soak watches it for leaks)",
                     trio_task_count())
        engineio = getattr(gw, "engineio", None)
        if engineio is not None:
            yield _gauge("kdc_engineio_sessions", "Engine.IO sessions open in this process", len(engineio.sockets))
        yield _counter("kdc_accept_errors", "accept() failures (EMFILE, ENFILE, ENOMEM, ENOBUFS)",
                       gw.server.accept_errors)
        turns = CounterMetricFamily("kdc_turns", "Turns by outcome (accepted/refused at the edge; the rest "
                                    "as this process's worker finished them)", labels=["outcome"])
        turns.add_metric(["accepted"], c.turns_accepted)
        turns.add_metric(["refused"], c.turns_refused)
        metrics = getattr(gw, "metrics", None)
        if metrics is not None:
            for outcome, n in metrics.turns.items():
                turns.add_metric([outcome], n)
        yield turns
        pubsub = getattr(getattr(gw.bus, "service", None), "pubsub", None)
        if pubsub is not None:
            yield _counter("kdc_redis_reconnects", "Times the Redis pub/sub connection was lost and re-made",
                           getattr(pubsub, "gaps", 0))
            yield _counter("kdc_redis_gap_events_recovered",
                           "Events pub/sub missed during a reconnect, re-read from the session log",
                           bs.get("recovered_after_gap", 0))
            yield _counter("kdc_redis_pings_missed", "Pub/sub PINGs unanswered in time (the connection was re-made)",
                           getattr(pubsub, "pings_missed", 0))
            yield _counter("kdc_redis_seq_rewinds", "Reconnects that found Redis without session events this process "
                           "had delivered (a failover lost them, or a restart); new events continue past them",
                           bs.get("seq_rewinds", 0))
        yield from _failure_counters(gw)
        yield from _protection_metrics(gw)


def _protection_metrics(gw: Any) -> Iterable[Any]:
    """The protections (kdc_trio/protect/): refusals by kind and action, and the pressure admission sees."""
    guard = getattr(gw, "guard", None)
    if guard is None:
        return
    refused = CounterMetricFamily("kdc_protection_refusals", "New turns and connections refused at the edge: "
                                  "rate_limited (429) or overloaded (503), by action", labels=["kind", "action"])
    for action, n in guard.rate_limited.items():
        refused.add_metric(["rate_limited", action], n)
    admission = guard.admission
    if admission is not None:
        for action, n in admission.shed.items():
            refused.add_metric(["overloaded", action], n)
    yield refused
    yield _counter("kdc_rate_check_failures", "Rate checks the limiter could not answer (the request passed)",
                   guard.check_failures)
    if admission is not None:
        yield _gauge("kdc_admission_pressure", "Admission's pressure (0..1): the largest of queue, connections "
                     "and loop-lag ratios", admission.pressure()[0])
        yield _gauge("kdc_event_loop_lag_seconds", "How late the admission sampler's last sleep woke",
                     admission.lag_s)


def _failure_counters(gw: Any) -> Iterable[Any]:
    """What the failure boundaries absorbed: Redis rounds retried, turns re-run or handed back,
    undecodable queue entries dead-lettered."""
    qs = gw.queue.statistics()
    if "dead_lettered" in qs:  # the Redis turn queue
        yield _counter("kdc_turn_queue_retries", "Turn-queue reads and lease renewals that failed and were retried",
                       qs["failures"])
        yield _counter("kdc_turns_dead_lettered", "Undecodable queue entries moved to the dead-letter stream",
                       qs["dead_lettered"])
    if getattr(gw, "processor", None) is not None:
        ps = gw.processor.statistics()
        yield _counter("kdc_turn_reruns", "Turn runs started again because Redis was unreachable", ps["rerun"])
        yield _counter("kdc_turns_handed_back", "Turns whose end could not be told, handed back to the queue",
                       ps["released"])


def trio_tasks() -> list[trio.lowlevel.Task]:
    """Tasks alive in the running trio run: a walk of the task tree from the root (scrape time,
    tests and bench/idle_profile.py; never on a per-event path)."""
    out, pending = [], [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        out.append(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return out


def trio_task_count() -> int:
    return len(trio_tasks())


def _outbox_depths(relay: Any) -> tuple[int, int]:
    total = deepest = 0
    for outbox in relay.outboxes():
        n = outbox.depth()
        total += n
        deepest = max(deepest, n)
    return total, deepest
