"""Checks that a safe copy is a consistent prefix of its ingres copy."""

import psycopg

from taler_ops.schema import registry


def prefix_problems(ingres, safe):
    """[] if every table holds exactly the ingres rows up to its watermark and all FKs resolve."""
    problems = []
    with psycopg.connect(safe) as dst, psycopg.connect(ingres) as src:
        marks = dict(dst.execute("SELECT table_name, last_serial FROM taler_ops.sync_watermarks"))
        for e in registry.REPLICATED:
            mark = marks.get(e.name, 0)
            q = (f"SELECT count(*), COALESCE(sum({e.serial}), 0), COALESCE(max({e.serial}), 0) "
                 f"FROM {e.qualified} WHERE {e.serial} <= %s")
            have, want = dst.execute(q, (mark,)).fetchone(), src.execute(q, (mark,)).fetchone()
            if have != want:
                problems.append(f"{e.name}: safe copy {have} != ingres {want} up to {mark}")
            beyond = dst.execute(f"SELECT count(*) FROM {e.qualified} WHERE {e.serial} > %s",
                                 (mark,)).fetchone()[0]
            if beyond:
                problems.append(f"{e.name}: {beyond} rows beyond the watermark {mark}")
            problems += orphan_problems(dst, e)
    return problems


def orphan_problems(conn, entry):
    out = []
    for fk in entry.parents:
        cols = " AND ".join(f"c.{c} IS NOT NULL" for c in fk.columns)
        match = " AND ".join(f"p.{r} = c.{c}" for c, r in zip(fk.columns, fk.ref_columns))
        orphans = conn.execute(
            f"SELECT count(*) FROM {entry.qualified} c WHERE {cols} AND NOT EXISTS "
            f"(SELECT 1 FROM exchange.{fk.table} p WHERE {match})").fetchone()[0]
        if orphans:
            out.append(f"{entry.name}: {orphans} rows without their {fk.table}")
    return out


def same_tables(a, b):
    """Row count and max serial of every replicated table agree."""
    with psycopg.connect(a) as x, psycopg.connect(b) as y:
        for e in registry.REPLICATED:
            q = f"SELECT count(*), COALESCE(max({e.serial}), 0) FROM {e.qualified}"
            left, right = x.execute(q).fetchone(), y.execute(q).fetchone()
            if left != right:
                return f"{e.name}: {left} != {right}"
    return None
