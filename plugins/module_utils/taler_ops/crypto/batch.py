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
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from . import catalog
from .signature_column import Row, row_from_db
from .context import SignatureContext

if TYPE_CHECKING:   # imported where a worker first connects (see _connection)
    import psycopg

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


def verify_sequential(name: str, rows: Iterable[Row], ctx: SignatureContext) -> list[Verdict]:
    spec = catalog.get(name)
    return [spec.verify(row, ctx) for row in rows]


def _verify_chunk(name: str, rows: list[Row], ctx: SignatureContext) -> list[Verdict]:
    return verify_sequential(name, rows, ctx)


# --- reading the rows in the workers ---------------------------------------------------
#
# Shipping rows from the caller to the workers costs the caller CPU (pickling)
# that the verifications then lack.  For a whole table the workers can read
# their share themselves: each gets a serial range, opens its own connection
# (kept for the life of the worker) and sends back only the rows that did not
# verify.

_connections: dict[str, "psycopg.Connection[Any]"] = {}


def _connection(conninfo: str) -> "psycopg.Connection[Any]":
    import psycopg
    conn = _connections.get(conninfo)
    if conn is None or conn.closed:
        conn = psycopg.connect(conninfo, autocommit=True)
        _connections[conninfo] = conn
    return conn


def verify_range(conninfo: str, name: str, ctx: SignatureContext, after: int, upto: int,
                 schema: str = "exchange", fetch: int = 5000,
                 ) -> tuple[int, list[tuple[dict[str, Any], Verdict]]]:
    """Verify the rows of ``name`` with after < serial <= upto, read through
    ``conninfo``: (rows checked, [(row, verdict) for every verdict not True])."""
    spec = catalog.get(name)
    sql = f"SELECT * FROM ({spec.query(schema)}) q WHERE q.serial <= %(upto)s"
    conn = _connection(conninfo)
    checked = 0
    bad: list[tuple[dict[str, Any], Verdict]] = []
    while True:
        cur = conn.execute(sql, {"after": after, "limit": fetch, "upto": upto})
        if cur.description is None:     # a SELECT always describes its columns
            raise AssertionError(f"{name}: the catalog's query returned no columns")
        names = [d.name for d in cur.description]
        rows = [row_from_db(names, values) for values in cur.fetchall()]
        for row in rows:
            verdict = spec.verify(row, ctx)
            if verdict is not True:
                bad.append((row, verdict))
        checked += len(rows)
        if len(rows) < fetch:
            return checked, bad
        after = rows[-1]["serial"]


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

    def verify(self, name: str, rows: Sequence[Row], ctx: SignatureContext) -> list[Verdict]:
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

    def verify_table(self, conninfo: str, name: str, ctx: SignatureContext, after: int, upto: int,
                     schema: str = "exchange") -> tuple[int, list[tuple[dict[str, Any], Verdict]]]:
        """Rows of ``name`` with after < serial <= upto, read and verified by
        the workers in serial ranges: (rows checked, rows not valid in serial
        order with their verdicts).  ``upto`` should be the largest serial the
        caller saw in its snapshot; the tables are append-only, so rows at or
        below it do not change while the workers read them."""
        span = upto - after
        if span <= 0:
            return 0, []
        if self.workers == 1 or span < self.min_parallel:
            return verify_range(conninfo, name, ctx, after, upto, schema)
        step = max(MIN_CHUNK, -(-span // (self.workers * CHUNKS_PER_WORKER)))
        bounds = [(lo, min(lo + step, upto)) for lo in range(after, upto, step)]
        pool = self._executor()
        futures = [pool.submit(verify_range, conninfo, name, ctx, lo, hi, schema) for lo, hi in bounds]
        checked = 0
        bad: list[tuple[dict[str, Any], Verdict]] = []
        for future in futures:
            n, b = future.result()
            checked += n
            bad.extend(b)
        return checked, bad

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "BatchVerifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[int, BatchVerifier] = {}


def verify_rows(name: str, rows: Sequence[Row], ctx: SignatureContext,
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
