"""`many` spreads its sessions' first events over one period (`phase`): the load generator gives
each connection's trigger its phase, and kdc-trio's bench bundle waits that long before its first
event (the peers do the same: bench/peers/fill.py, node_sio/server.js)."""

from __future__ import annotations

import json

import pytest
import trio

from bench.loadgen.client import trigger_for
from bench.peers.fill import phase_of
from kdc_trio.bundles.bench import MAX_PHASE_S, BenchBundle, spec_of


class _Comm:
    """What the bundle calls, with the (mock) time of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    async def start(self, **_) -> None:
        self.calls.append(("start", trio.current_time()))

    async def delta(self, *_a, **_k) -> None:
        self.calls.append(("delta", trio.current_time()))

    async def complete(self, **_) -> None:
        self.calls.append(("complete", trio.current_time()))


class _Turn:
    def __init__(self, text: str) -> None:
        self.message = type("M", (), {"text": text})()


@pytest.mark.parametrize("text, phase", [
    ('{"n": 1}', 0.0), ('{"phase": 0.25}', 0.25), ('{"phase": -3}', 0.0), ("not json", 0.0),
    ('{"phase": 1e9}', MAX_PHASE_S), ('{"phase": "x"}', 0.0), ('{"phase": null}', 0.0)])
def test_the_phase_is_read_and_bounded(text, phase):
    assert spec_of(text)[4] == phase
    spec = json.loads(text) if text.startswith("{") else {}
    assert phase_of(spec) == phase  # the Python peers read it the same way


@pytest.mark.parametrize("phase", [0.0, 0.5])
async def test_the_bundle_waits_its_phase_then_paces(autojump_clock, phase):
    comm = _Comm()
    t0 = trio.current_time()
    await BenchBundle().run(_Turn(json.dumps({"n": 3, "size": 20, "rate": 10, "phase": phase})), comm)
    deltas = [t - t0 for kind, t in comm.calls if kind == "delta"]
    assert len(deltas) == 3
    # the first event `phase` after the start, then one every 1/rate (the timers' 1 ms grid)
    for i, t in enumerate(deltas):
        assert phase + i * 0.1 <= t < phase + i * 0.1 + 0.01, (i, t)


def test_the_load_generator_spreads_the_phases():
    """Connection i of a load generator whose sessions are `first`.. of `of` gets (first + i) / of
    of a period; over all generators of a run the phases cover one period evenly."""
    trig = {"n": 10, "size": 100, "rate": 20.0}
    assert [trigger_for(trig, {"first": 2, "of": 8}, i)["phase"] for i in range(4)] == \
        pytest.approx([2 / 160, 3 / 160, 4 / 160, 5 / 160], abs=1e-6)
    phases = sorted(trigger_for(trig, {"first": first, "of": 6}, i)["phase"]
                    for first, m in ((0, 3), (3, 3)) for i in range(m))
    assert phases == pytest.approx([k / 6 / 20 for k in range(6)], abs=1e-6)
    assert trigger_for(trig, None, 3) is trig  # no spread: the trigger as it is
    assert "phase" not in trigger_for({**trig, "rate": 0}, {"first": 0, "of": 4}, 1)  # unpaced: no phase
