"""The safe copy's planner statistics, kept current after passes that copied rows.

A bulk copy leaves the safe copy's tables without statistics until autovacuum's
launcher comes round to them, and an audit planned meanwhile can take ten times
as long (issue 20: the first audit after 1M rows took 190-200 s, 19 s with
statistics).  So after a pass that copied rows the sync applies autovacuum's
own rule at once: a table is analyzed when the rows changed since its last
ANALYZE exceed ``max(MIN_ROWS, SCALE * reltuples)``.  The changes are
``n_mod_since_analyze`` (pg_stat_user_tables, summed over a partitioned
table's partitions), or the rows this pass copied if that is more: a session
flushes its own counts to the statistics at most once a second while busy, so
the sync asks for a flush first (``pg_stat_force_next_flush``, which also keeps
counts flushed after an ANALYZE from making it look stale at once).  All of it
is readable without owning the tables.

The sync's role does not own them, so it calls ``taler_ops.analyze_exchange_table``
(schema/analyze.py, created by exchange-dbinit on a safe copy), never ANALYZE
itself.  Only the safe copy: nothing is asked of the untrusted ingres copy, and
the names come from the registry.  Statistics are an optimisation: a failure
is logged once and the sync goes on (autovacuum still analyzes later).
"""

import logging
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from ..schema import analyze
from .failures import connection_problem, one_line

log = logging.getLogger("taler_ops.sync")

# Autovacuum's rule (autovacuum_analyze_scale_factor 0.1) with a higher floor than its
# 50 rows: below 10000 changed rows the plans hardly change and the daemon's small
# passes would analyze all the time.
MIN_ROWS = 10000
SCALE = 0.1

# Per table: changes since the last ANALYZE, and the rows the statistics believe it
# holds (-1, never analyzed, counts as 0), over the table itself or every leaf of a
# partitioned one (pg_partition_tree lists nothing for a plain table; an ANALYZE of the
# parent recurses into the leaves, and autovacuum never analyzes the parent).
_CHANGES = """
SELECT t.name, coalesce(sum(s.n_mod_since_analyze), 0)::int8,
       coalesce(sum(greatest(c.reltuples, 0)), 0)::float8
  FROM unnest(%s::text[]) AS t(name)
  CROSS JOIN LATERAL to_regclass(format('exchange.%%I', t.name)) AS r(rel)
  CROSS JOIN LATERAL (SELECT relid FROM pg_partition_tree(r.rel) WHERE isleaf
                      UNION ALL
                      SELECT r.rel WHERE NOT EXISTS (SELECT FROM pg_partition_tree(r.rel))) l
  JOIN pg_class c ON c.oid = l.relid
  LEFT JOIN pg_stat_user_tables s ON s.relid = l.relid
 GROUP BY t.name"""


def threshold(reltuples: float) -> float:
    return max(MIN_ROWS, SCALE * max(reltuples, 0.0))


class Keeper:
    """One sync's statistics keeping; each kind of failure is warned about once."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def _warn_once(self, kind: str, message: str, warnings: list[str]) -> None:
        if kind in self.warned:
            return
        self.warned.add(kind)
        log.warning("%s", message)
        warnings.append(message)

    def after_pass(self, dst: psycopg.Connection[Any], copied: Mapping[str, int],
                   warnings: list[str]) -> list[str]:
        """ANALYZE the tables that this pass's copies (``copied``: table -> rows) took over
        the threshold; returns them.  ``dst``: the safe copy, in autocommit."""
        tables = [name for name, rows in copied.items() if rows > 0]
        if not tables:
            return []
        try:
            # The counts go out when the session is next idle, i.e. before the next
            # statement.  Without it (not granted) the rows copied still count.
            dst.execute("SELECT pg_stat_force_next_flush()")
        except psycopg.Error:
            pass
        try:
            if not self._callable(dst, warnings):
                return []
            rows = dst.execute(_CHANGES, (tables,)).fetchall()
        except psycopg.Error as exc:
            self._warn_once("read", "could not read the safe copy's table statistics "
                            f"(pg_stat_user_tables): {one_line(exc)}; not analyzing", warnings)
            return []
        due = [name for name, changed, reltuples in rows
               if max(changed, copied[name]) > threshold(reltuples)]
        done = []
        for name in sorted(due, key=tables.index):
            started = time.monotonic()
            try:
                dst.execute(f"SELECT {analyze.FUNCTION}(%s)", (name,))
            except psycopg.Error as exc:
                self._warn_once("analyze", f"could not ANALYZE exchange.{name} on the safe copy "
                                f"({analyze.FUNCTION}): {one_line(exc)}; the sync goes on, "
                                "autovacuum analyzes later", warnings)
                if connection_problem(exc):
                    break       # the next pass finds the connection lost
                continue
            log.info("event=analyze table=%s seconds=%.2f", name, time.monotonic() - started)
            done.append(name)
        return done

    def _callable(self, dst: psycopg.Connection[Any], warnings: list[str]) -> bool:
        """Whether the function exists and this role may execute it; warns once if not."""
        row = dst.execute(
            "SELECT p IS NOT NULL, CASE WHEN p IS NOT NULL THEN"
            " has_function_privilege(p, 'EXECUTE') END, current_user"
            " FROM to_regprocedure(%s) AS p", (analyze.SIGNATURE,)).fetchone()
        assert row is not None      # a SELECT over one function call returns its one row
        exists, allowed, user = row
        if not exists:
            self._warn_once(
                "missing", f"the safe copy has no {analyze.SIGNATURE}: run exchange-dbinit on "
                "it (as its owner) so that the sync can keep its planner statistics current "
                "after bulk copies; until then only autovacuum analyzes it", warnings)
            return False
        if not allowed:
            self._warn_once(
                "privilege", f"the sync's role {user} may not execute {analyze.SIGNATURE}: "
                "GRANT EXECUTE on it (roles/sync_service does) so that the sync can keep the "
                "safe copy's planner statistics current; until then only autovacuum analyzes "
                "it", warnings)
            return False
        return True
