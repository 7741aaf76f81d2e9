"""What pg_catalog says about the tables of schema ``exchange``: for comparing builds.

Constraints are described by kind and columns (not by name: Taler and the model
name them differently); only the properties that matter to the data are kept.
"""

# Defaults spelled differently but equal in effect (model vs Taler).
_DEFAULT_SPELLINGS = {"false": "false", "true": "true"}


def _norm_default(expr):
    if expr is None:
        return None
    e = expr.strip()
    if e.startswith("nextval("):
        return "nextval"
    return _DEFAULT_SPELLINGS.get(e.lower(), e)


def tables(conn, schema="exchange"):
    """Names of the ordinary and partitioned tables of ``schema`` (not partitions)."""
    return [r[0] for r in conn.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            ORDER BY 1""", (schema,))]


def describe(conn, table, schema="exchange"):
    """A comparable description of one table (and of its partitions' constraints)."""
    rel = f"{schema}.{table}"
    cols = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid), a.attidentity
             FROM pg_attribute a LEFT JOIN pg_attrdef d
                  ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attname""", (rel,)).fetchall()
    columns = {name: (typ, notnull, _norm_default(default), identity or None)
               for name, typ, notnull, default, identity in cols}
    # Physical order too: binary COPY without a column list (and Taler's own sync's
    # positional INSERTs) depend on it.
    order = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (rel,))]
    out = {"columns": columns, "column_order": order, "constraints": _constraints(conn, rel)}
    part = conn.execute(
        "SELECT pg_get_partkeydef(%s::regclass)", (rel,)).fetchone()[0]
    out["partition_key"] = part
    if part:
        parts = conn.execute(
            """SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid)
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = %s::regclass ORDER BY 2""", (rel,)).fetchall()
        out["partitions"] = [
            (bound, _constraints(conn, name, inherited=False)) for name, bound in parts]
    return out


def _constraints(conn, rel, inherited=True):
    rows = conn.execute(
        """SELECT c.contype,
                  ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                        ORDER BY k.i),
                  c.confrelid::regclass::text,
                  ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                        ORDER BY k.i),
                  c.confdeltype, c.conparentid <> 0, pg_get_constraintdef(c.oid)
             FROM pg_constraint c
            WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u', 'f', 'c')""",
        (rel,)).fetchall()
    out = set()
    for kind, cols, ftable, fcols, deltype, from_parent, definition in rows:
        if not inherited and from_parent:
            continue   # a partition's copy of its parent's key: described on the parent
        if kind == "c":
            if not inherited:
                continue   # CHECKs are inherited by partitions; described on the parent
            out.add(("c", tuple(cols), definition))
        elif kind == "f":
            out.add(("f", tuple(cols), ftable, tuple(fcols), deltype))
        else:
            out.add((kind, tuple(cols)))
    return sorted(out)


def diff(a, b, names):
    """Human-readable differences between two {table: describe()} maps."""
    out = []
    for t in names:
        da, db = a.get(t), b.get(t)
        if da is None or db is None:
            out.append(f"{t}: only in {'second' if da is None else 'first'}")
            continue
        for col in sorted(set(da["columns"]) | set(db["columns"])):
            ca, cb = da["columns"].get(col), db["columns"].get(col)
            if ca != cb:
                out.append(f"{t}.{col}: {ca} != {cb}")
        for key in ("column_order", "constraints", "partition_key", "partitions"):
            if da.get(key) != db.get(key):
                out.append(f"{t} {key}: {da.get(key)} != {db.get(key)}")
    return out
