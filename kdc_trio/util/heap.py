"""The process's heap after start-up, kept out of the garbage collector's way.

A full (generation 2) collection walks every tracked object. After start-up most of them are the
code itself: modules, classes, functions, the settings, the bundle, the app's routes — tens of
thousands of objects that live as long as the process and are never garbage. `settle()` collects
once and then freezes everything alive into the permanent generation (`gc.freeze()`, as
Instagram's servers do), so later collections walk only what the process made since: connections,
sessions, turns. Measured in bench `many` at 400 sessions × 20 ev/s: the longest full-collection
pause (the event loop stops for it, every stream waits) fell from ~80 ms to ~20 ms together with
untracked log entries (relay/session_log.py).

Called by the CLI (`kdc-trio serve`, `kdc-trio worker`) once the process is ready; an embedding
application decides for its own process (kdc_trio.embed does not call it).

A worker also collects its young generation less often (`WORKER_YOUNG_THRESHOLD`): a producer
through Redis keeps each event's envelope (a few dicts) alive until Redis answers its call, so at
CPython's default (700 net allocations) a young collection ran every ~80 events and walked the
envelopes in flight, then passed them to the older generations to be walked again: ~1.3 us of a
worker's ~13 us per streamed event. With 10,000 most envelopes are gone before a collection
comes; a young collection walks at most that many live objects (well under a millisecond).
"""

from __future__ import annotations

import gc

# Net allocations between young-generation collections in `kdc-trio worker` (CPython: 700).
WORKER_YOUNG_THRESHOLD = 10_000


def settle(*, young: int | None = None) -> int:
    """Collect, then freeze what is alive; returns how many objects are now frozen. With
    `young`, the young generation is collected every `young` net allocations from now on."""
    gc.collect()
    gc.freeze()
    if young is not None:
        gc.set_threshold(young, *gc.get_threshold()[1:])
    return gc.get_freeze_count()
