"""Compare the exchange, the ingres copy and the safe copy table by table.

Usage: compare_copies.py EXCHANGE_URI INGRES_URI SAFE_URI
Prints one JSON object: per replicated table the row count on each side and
whether the copied columns agree (digest over the rows in serial order; not the
first-seen columns, which the exchange keeps changing and the copies keep as
inserted), plus the duplicate serials found anywhere.  Exit 0 when all three agree, 1 if not.
"""

import json
import sys

import psycopg
from psycopg import sql

from taler_ops.schema import registry


def digest(conn, entry):
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in entry.compared_columns)
    query = sql.SQL(
        "SELECT count(*), count(DISTINCT {serial}), "
        "md5(COALESCE(string_agg(md5(ROW({cols})::text), '' ORDER BY {serial}), '')) "
        "FROM {table}").format(serial=sql.Identifier(entry.serial), cols=cols,
                               table=sql.Identifier("exchange", entry.name))
    return conn.execute(query).fetchone()


def main(uris):
    sides = dict(zip(("exchange", "ingres", "safe_copy"), uris))
    conns = {name: psycopg.connect(uri) for name, uri in sides.items()}
    report, ok = {}, True
    for entry in registry.REPLICATED:
        rows = {name: digest(conn, entry) for name, conn in conns.items()}
        counts = {name: r[0] for name, r in rows.items()}
        dupes = {name: r[0] - r[1] for name, r in rows.items() if r[0] != r[1]}
        same = len({r[2] for r in rows.values()}) == 1
        ok = ok and same and not dupes
        report[entry.name] = {"counts": counts, "same": same, "duplicate_serials": dupes}
    print(json.dumps({"ok": ok, "tables": report,
                      "total": {n: sum(t["counts"][n] for t in report.values()) for n in sides}}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:4]))
