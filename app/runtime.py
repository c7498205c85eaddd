"""Process-wide tuning, applied once a long-running process (the API, a worker) has started."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """After start-up: what is alive then (modules, models, the schema; in the API also its compiled
    statements) lives as long as the process, so it is frozen and never scanned again (start-up's
    garbage collected first, not frozen with it); and a young generation of 10,000 objects instead
    of 700, since a nested page makes ~100,000 short-lived ones. bench/api.py: nested
    `leads(first: 100)` p99 131 -> 75-81 ms at concurrency 1, 20 -> 29-32 pages/s at 16. In a
    worker, untuned, full collections took 0.11-0.17 s of CPU in a `bench/e2e.py --pipeline-only`
    run (about 2.5% of its CPU); tuned, none ran."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
