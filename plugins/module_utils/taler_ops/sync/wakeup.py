"""Wake-up hints from the ingres copy to the sync daemon (LISTEN/NOTIFY).

A logical-replication apply worker fires row-level triggers marked ``ENABLE
ALWAYS`` (it runs with ``session_replication_role = replica``) but no
statement-level ones.  ``install`` puts one such AFTER INSERT row trigger on
every replicated ingres table; it calls ``pg_notify(CHANNEL, '')``, which
PostgreSQL folds into one notification per transaction and delivers when the
applied transaction commits.  The sync daemon LISTENs on the ingres and starts a
pass at once instead of waiting for its next poll.

The ingres copy is untrusted: a notification is only a hint *when* to look.
It carries no data, the sync never decides anything from it, and polling stays
as the fallback (a missing, removed or disabled trigger, a hot-standby ingres
where LISTEN is impossible, or a flood of fake notifications only change when a
pass starts, never what it copies).
"""

from psycopg import sql

from ..schema import registry

CHANNEL = "taler_ops_ingres"
TRIGGER = "taler_ops_wake_sync"

_FUNCTION = f"""
CREATE OR REPLACE FUNCTION taler_ops.wake_sync() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', '');
  RETURN NULL;
END $$
"""


def install(conn):
    """Put the trigger on every replicated table (and partition), enabled ALWAYS.

    Returns (tables, triggers created); idempotent.

    Needs a login that may create triggers on the ingres tables (the ingres superuser).
    """
    conn.execute("CREATE SCHEMA IF NOT EXISTS taler_ops")
    conn.execute(_FUNCTION)
    n = created = 0
    for entry in registry.REPLICATED:
        table = sql.Identifier("exchange", entry.name)
        exists = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND tgname = %s)", (f"exchange.{entry.name}", TRIGGER)).fetchone()[0]
        if not exists:
            conn.execute(sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} FOR EACH ROW "
                                 "EXECUTE FUNCTION taler_ops.wake_sync()").format(
                sql.Identifier(TRIGGER), table))
            created += 1
        leaves = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid IN ("
            " SELECT %s::regclass UNION SELECT relid FROM pg_partition_tree(%s::regclass))",
            (f"exchange.{entry.name}",) * 2).fetchall()
        for schema, rel in leaves:
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(
                sql.Identifier(schema, rel), sql.Identifier(TRIGGER)))
        n += 1
    return n, created
