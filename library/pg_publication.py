#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: a logical-replication publication and its table list."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_publication
short_description: Create, converge or drop a PostgreSQL logical-replication publication
description:
  - Ensures a publication exists in the connected database with exactly the given tables and
    parameters, or is absent.
  - The table list is converged with C(ALTER PUBLICATION ... ADD TABLE / DROP TABLE);
    C(publish) and C(publish_via_partition_root) with C(ALTER PUBLICATION ... SET).
  - Switching between O(all_tables) and a table list drops and re-creates the publication
    in one transaction (PostgreSQL cannot alter that).
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  name:
    description: Name of the publication.
    type: str
    required: true
  state:
    description: Whether the publication should exist.
    type: str
    choices: [present, absent]
    default: present
  tables:
    description:
      - The complete list of published tables, each C(schema.table) (an unqualified name means
        C(public)); SQL's rules apply, so C('"MySchema".t') keeps case.
      - Tables not listed are removed from the publication. Every table must exist.
    type: list
    elements: str
    default: []
  all_tables:
    description: Publish every table of the database (C(FOR ALL TABLES); needs a superuser).
    type: bool
    default: false
  publish:
    description: Which operations are published.
    type: list
    elements: str
    choices: [insert, update, delete, truncate]
    default: [insert, update, delete, truncate]
  publish_via_partition_root:
    description: Publish changes of partitions as changes of their partitioned root table.
    type: bool
    default: false
  owner:
    description: Owner of the publication. Omit to leave it (a new one belongs to O(login_user)).
    type: str
  publish_generated_columns:
    description:
      - Whether stored generated columns are published (PostgreSQL 18 or later; C(none) is the
        server's default).
      - Omit to leave it; the statements are then the same as on PostgreSQL 15. Setting it on
        an older server fails the task with the version it needs.
    type: str
    choices: [none, stored]
attributes:
  check_mode:
    support: full
    description:
      - Reports the statements that would run, without running them.
      - A missing role, schema or table is a warning in check mode (an earlier task would create
        it), an error otherwise.
  diff_mode:
    support: full
    description: Shows tables and parameters before and after.
notes:
  - Needs C(wal_level=logical) on the server only once a subscriber connects, not to create the publication.
  - Options that newer servers add are used only when set and only when the connected server has
    them (C(server_version_num)); PostgreSQL 16 and 17 add none to publications.
"""

EXAMPLES = r"""
- name: Publish the replicated exchange tables
  pg_publication:
    login_host: /run/taler-ops/exchange
    login_port: 5441
    login_db: taler-exchange
    name: taler_auditor
    tables:
      - exchange.reserves
      - exchange.reserves_in
    publish: [insert, update, delete, truncate]
"""

RETURN = r"""
publication:
  description: The publication after the run (predicted in check mode); null when absent.
  returned: always
  type: dict
  sample:
    name: taler_auditor
    all_tables: false
    tables: [exchange.reserves, exchange.reserves_in]
    publish: [insert, update, delete, truncate]
    publish_via_partition_root: false
    owner: postgres
    publish_generated_columns: none  # PostgreSQL 18 or later only
queries:
  description: Statements run (would run, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import connection_argument_spec, require_psycopg
from ansible.module_utils.taler_pg_options import (
    UnsupportedOption, check_publication_options, publication_catalog_query,
    publication_create_sql, publication_options, publication_set_sql, publication_state_from_row)
from ansible.module_utils.taler_pg_sql import Session, parse_qualified, qualified_text

OPERATIONS = ["insert", "update", "delete", "truncate"]


def read_publication(session, name):
    row = session.row(publication_catalog_query(session.server_version), (name,))
    if row is None:
        return None
    tables = session.rows(
        "SELECT n.nspname, c.relname FROM pg_publication_rel pr JOIN pg_class c ON c.oid = pr.prrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE pr.prpubid = %s", (row["oid"],))
    return {
        "name": name,
        "all_tables": row["puballtables"],
        "tables": sorted((t["nspname"], t["relname"]) for t in tables),
        "publish": [op for op in OPERATIONS if row["pub" + op]],
        "publish_via_partition_root": row["pubviaroot"],
        "owner": row["owner"],
        **publication_state_from_row(row, session.server_version),
    }


def view(state):
    if state is None:
        return None
    out = dict(state)
    out["tables"] = [qualified_text(s, t) for s, t in state["tables"]]
    return out


def table_list(names):
    from psycopg import sql
    return sql.SQL(", ").join(sql.Identifier(s, t) for s, t in names)


def main():
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        tables=dict(type="list", elements="str", default=[]),
        all_tables=dict(type="bool", default=False),
        publish=dict(type="list", elements="str", choices=OPERATIONS, default=list(OPERATIONS)),
        publish_via_partition_root=dict(type="bool", default=False),
        owner=dict(type="str"),
        publish_generated_columns=dict(type="str", choices=["none", "stored"]),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[("tables", "all_tables")])
    require_psycopg(module)
    from psycopg import sql

    p = module.params
    session = Session(module, "database")
    if p["state"] != "absent":
        try:
            check_publication_options(p["name"], p, session.server_version)
        except UnsupportedOption as exc:
            session.fail(str(exc))
    before = read_publication(session, p["name"])
    pub = sql.Identifier(p["name"])
    after = None

    if p["state"] == "absent":
        if before is not None:
            session.execute(sql.SQL("DROP PUBLICATION {}").format(pub))
    else:
        try:
            wanted = sorted(set(parse_qualified(t) for t in p["tables"]))
        except ValueError as exc:
            module.fail_json(msg=f"bad table name in tables: {exc}")
        if wanted:
            found = {(r["nspname"], r["relname"]) for r in session.rows(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
                " AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([s for s, _ in wanted], [t for _, t in wanted]))}
            missing = [qualified_text(s, t) for s, t in wanted if (s, t) not in found]
            if missing:
                session.missing(f"cannot publish {p['name']!r}: no such table in database "
                             f"{p['login_db']!r}: " + ", ".join(missing))
        publish = [op for op in OPERATIONS if op in p["publish"]]
        via_root = p["publish_via_partition_root"]
        gencols = p["publish_generated_columns"]
        options = publication_options(publish, via_root, gencols)
        target = {"all_tables": p["all_tables"], "tables": [] if p["all_tables"] else wanted}
        if gencols is not None:
            target["publish_generated_columns"] = gencols

        def create():
            session.execute(publication_create_sql(p["name"], options, tables=wanted,
                                                   all_tables=p["all_tables"]))

        if before is None:
            create()
        elif before["all_tables"] != p["all_tables"]:
            # Subscribers must never see the publication missing: one transaction.
            with session.conn.transaction():
                session.execute(sql.SQL("DROP PUBLICATION {}").format(pub))
                create()
        else:
            if not p["all_tables"]:
                add = [t for t in wanted if t not in before["tables"]]
                drop = [t for t in before["tables"] if t not in wanted]
                if add:
                    session.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                        pub, table_list(add)))
                if drop:
                    session.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                        pub, table_list(drop)))
            if (before["publish"] != publish or before["publish_via_partition_root"] != via_root
                    or (gencols is not None and before.get("publish_generated_columns") != gencols)):
                session.execute(publication_set_sql(p["name"], options))
        if p["owner"] and (before is None or before["owner"] != p["owner"]):
            if before is None and not session.row("SELECT 1 AS x FROM pg_roles WHERE rolname = %s",
                                                  (p["owner"],)):
                session.fail(f"owner role {p['owner']!r} does not exist")
            session.execute(sql.SQL("ALTER PUBLICATION {} OWNER TO {}").format(
                pub, sql.Identifier(p["owner"])))

        if session.check_mode or not session.queries:
            after = dict(before or {"name": p["name"], "owner": p["login_user"] or None})
            after.update(target, publish=publish, publish_via_partition_root=via_root)
            if p["owner"]:
                after["owner"] = p["owner"]
        else:
            after = read_publication(session, p["name"])

    result = dict(changed=bool(session.queries), publication=view(after), queries=session.queries)
    if module._diff:
        result["diff"] = dict(before=view(before) or {}, after=view(after) or {})
    session.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
