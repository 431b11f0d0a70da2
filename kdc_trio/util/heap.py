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

Both also collect their young generation less often (`KDC_GC_YOUNG_THRESHOLD`, default 10,000
net allocations instead of CPython's 700). Events in flight (an envelope until Redis answers the
producer's call, a frame until the socket takes it) are then mostly gone before a young collection
comes, so they are neither walked by it nor promoted to the older generations, where each survivor
counts towards the next full collection. A full collection walks every connection's objects
(~110 per streaming SSE session, its running turn included; ~65 per idle stream): 25-50 ms at
600-800 sessions, every ~2 s at CPython's default in bench `many`; with 10,000 none came in a
5-s rung, and a young collection walks at most that many
objects (2-4 ms here). In a worker, a young collection at 700 ran every ~80 events and cost ~1.3 us
of its ~13 us per streamed event.
"""

from __future__ import annotations

import gc


def settle(*, young: int | None = None) -> int:
    """Collect, then freeze what is alive; returns how many objects are now frozen. With
    `young` (> 0), the young generation is collected every `young` net allocations from now on."""
    gc.collect()
    gc.freeze()
    if young is not None and young > 0:
        gc.set_threshold(young, *gc.get_threshold()[1:])
    return gc.get_freeze_count()
