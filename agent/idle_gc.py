"""When tortie's long-lived processes run the cyclic garbage collector: in a lull, not mid-burst.

Owns the interpreter's collector settings and one daemon thread, `idle-gc`.
`tortie-agent` and `tortie-bgp` call `start()` once, after start-up.

Why: a young-generation collection walks every tracked object that survived
since the previous one. In a burst of 10,000 learned routes the agent keeps
~100,000 new tracked objects (RIB paths, routes, the kernel mirror), and one
collection over them took 21 ms of the ~230 ms from session up to routes in
the kernel (bench/bgp.py, traced), on the thread that writes the routes. The
same walk once the burst is over costs the same CPU and delays nothing.

How:
  * everything loaded at start-up (modules, grpc, pydantic schemas) is frozen
    out of the collector's view (`gc.freeze`): it lives as long as the process;
  * automatic collection stays on, with a young threshold (BACKSTOP) a burst
    of tens of thousands of routes does not reach: it only matters to a
    process that is never quiet, which still collects;
  * the thread samples the young generation's count every TICK; when it moved
    by less than QUIET since the previous sample (nothing much is being built
    or freed) and at least YOUNG objects are waiting, it collects the
    generation CPython would have: the oldest one whose count passed its
    threshold. So the generations still age as usual.

Cyclic garbage made during a burst waits until the burst is over: memory
only, and the agent makes few cycles.
"""

from __future__ import annotations

import gc
import threading
import time

BACKSTOP = 500_000  # young objects before CPython collects on its own (~0.1 s walk)
OLDER = (10, 10)  # CPython's defaults: a gen-1 walk every 10 young ones, gen 2 every 10 of those
TICK = 0.05  # seconds between samples
QUIET = 1_000  # young-count change per TICK below which the process counts as quiet
YOUNG = 10_000  # fewer waiting than this: not worth a walk yet

_started = False
_lock = threading.Lock()


def due_generation(counts: tuple[int, int, int], thresholds: tuple[int, int, int]) -> int:
    """The generation CPython's own trigger would collect for these counts (pure)."""
    for gen in (2, 1):
        if counts[gen] > thresholds[gen]:
            return gen
    return 0


def start() -> None:
    """Freeze what start-up loaded, raise the automatic threshold, start the thread (once)."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
    gc.freeze()
    gc.set_threshold(BACKSTOP, *OLDER)
    threading.Thread(target=_watch, name="idle-gc", daemon=True).start()


def _watch() -> None:
    thresholds = (YOUNG, *OLDER)
    last = gc.get_count()[0]
    while True:  # as long as the process
        time.sleep(TICK)
        counts = gc.get_count()
        young = counts[0]
        if young >= YOUNG and abs(young - last) < QUIET:
            gc.collect(due_generation(counts, thresholds))
            young = gc.get_count()[0]
        last = young
