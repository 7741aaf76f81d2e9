"""Verifying many rows of one signature column, on every core.

Signature verification is the audit's expensive part and pure CPU work, so
large batches are cut into chunks that a pool of worker processes verifies
(threads would not help: most of the work holds the GIL).  Small batches run
in the calling process, where the pool's round trip would cost more than it
saves.  The verdicts come back in the rows' order.

Workers start from a fork server that has already imported this package: a
plain fork would copy the caller's threads and open connections (the audit
holds psycopg connections), and spawning from scratch costs an interpreter
start per worker.
"""

import atexit
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Mapping, Sequence

from . import catalog
from .context import SignatureContext

Verdict = bool | None

# Below this many rows the pool's overhead (pickling, one round trip per
# chunk) outweighs the gain; measured in bench/bench_signatures.py.
MIN_PARALLEL = 256
# A few chunks per worker keep every core busy to the end of a batch.
CHUNKS_PER_WORKER = 4
MIN_CHUNK = 64


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def verify_sequential(name: str, rows: Iterable[Mapping], ctx: SignatureContext) -> list[Verdict]:
    spec = catalog.get(name)
    return [spec.verify(row, ctx) for row in rows]


def _verify_chunk(name: str, rows: list, ctx: SignatureContext) -> list[Verdict]:
    return verify_sequential(name, rows, ctx)


class BatchVerifier:
    """A reusable pool; ``workers=1`` never starts one."""

    def __init__(self, workers: int | None = None, min_parallel: int = MIN_PARALLEL,
                 start_method: str = "forkserver"):
        self.workers = max(1, workers or cpu_count())
        self.min_parallel = min_parallel
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            mp = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                mp.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp)
        return self._pool

    def verify(self, name: str, rows: Sequence[Mapping], ctx: SignatureContext) -> list[Verdict]:
        rows = list(rows)
        if self.workers == 1 or len(rows) < self.min_parallel:
            return verify_sequential(name, rows, ctx)
        size = max(MIN_CHUNK, -(-len(rows) // (self.workers * CHUNKS_PER_WORKER)))
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        pool = self._executor()
        futures = [pool.submit(_verify_chunk, name, chunk, ctx) for chunk in chunks]
        verdicts: list[Verdict] = []
        for future in futures:
            verdicts.extend(future.result())
        return verdicts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "BatchVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: dict[int, BatchVerifier] = {}


def verify_rows(name: str, rows: Sequence[Mapping], ctx: SignatureContext,
                workers: int | None = None) -> list[Verdict]:
    """Verdicts for ``rows`` of signature column ``name`` ("table.column"),
    with a pool kept for the life of the process (one per worker count)."""
    n = max(1, workers or cpu_count())
    if n not in _shared:
        _shared[n] = BatchVerifier(n)
    return _shared[n].verify(name, rows, ctx)


@atexit.register
def _close_shared() -> None:
    for verifier in _shared.values():
        verifier.close()
