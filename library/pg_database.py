#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: a database of a PostgreSQL instance, its owner and connection limit."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_database
short_description: Create, converge or drop a PostgreSQL database
description:
  - Ensures a database exists with the given owner and connection limit, or is absent.
  - Encoding and locale are fixed at creation; a database that exists with others makes the
    task fail, since PostgreSQL cannot change them.
  - Connect to another database than O(name) (O(login_db), normally C(postgres)).
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  name:
    description: Name of the database.
    type: str
    required: true
  state:
    description: Whether the database should exist. C(absent) drops it with all its data.
    type: str
    choices: [present, absent]
    default: present
  owner:
    description: Owner role. Omit to leave it (a new one belongs to O(login_user)).
    type: str
  encoding:
    description: Encoding of a new database.
    type: str
    default: UTF8
  locale:
    description: C(LC_COLLATE) and C(LC_CTYPE) of a new database.
    type: str
    default: C.UTF-8
  template:
    description: Template of a new database.
    type: str
    default: template0
  connection_limit:
    description: Maximum concurrent connections, C(-1) for no limit. Omit to leave it.
    type: int
  force:
    description: With O(state=absent), terminate the database's sessions first (C(WITH (FORCE))).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports the statements that would run, without running them.
  diff_mode:
    support: full
    description: Shows owner, encoding, locale and connection limit before and after.
"""

EXAMPLES = r"""
- name: The ingres copy's database, owned by the non-login owner role
  pg_database:
    login_host: /run/taler-ops/ingres
    login_port: 5442
    login_db: postgres
    name: taler-ingres
    owner: ingres-owner
"""

RETURN = r"""
database:
  description: The database after the run (predicted in check mode); null when absent.
  returned: always
  type: dict
  sample: {name: taler-ingres, owner: ingres-owner, encoding: UTF8, locale: C.UTF-8, connection_limit: -1}
queries:
  description: Statements run (would run, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import connection_argument_spec, require_psycopg
from ansible.module_utils.taler_pg_sql import Session


def read_database(session, name):
    row = session.row(
        "SELECT d.datname, r.rolname, pg_encoding_to_char(d.encoding) AS encoding, d.datcollate,"
        " d.datctype, d.datconnlimit FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
        " WHERE d.datname = %s", (name,))
    if row is None:
        return None
    return {"name": name, "owner": row["rolname"], "encoding": row["encoding"],
            "locale": row["datcollate"] if row["datcollate"] == row["datctype"]
            else f"{row['datcollate']}/{row['datctype']}",
            "connection_limit": row["datconnlimit"]}


def same_encoding(a, b):
    return a.replace("-", "").replace("_", "").upper() == b.replace("-", "").replace("_", "").upper()


def main():
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        owner=dict(type="str"),
        encoding=dict(type="str", default="UTF8"),
        locale=dict(type="str", default="C.UTF-8"),
        template=dict(type="str", default="template0"),
        connection_limit=dict(type="int"),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    from psycopg import sql

    p = module.params
    name = p["name"]
    session = Session(module, "database")
    before = read_database(session, name)
    db = sql.Identifier(name)
    after = None

    if p["state"] == "absent":
        if before is not None:
            session.execute(sql.SQL("DROP DATABASE {}{}").format(
                db, sql.SQL(" WITH (FORCE)" if p["force"] else "")))
    else:
        if p["owner"] and not session.row("SELECT 1 AS x FROM pg_roles WHERE rolname = %s",
                                          (p["owner"],)):
            session.missing(f"owner role {p['owner']!r} of database {name!r} does not exist")
        if before is None:
            # CREATE DATABASE cannot run in a transaction block: the session is autocommit.
            stmt = sql.SQL("CREATE DATABASE {} WITH TEMPLATE {} ENCODING {} LOCALE {}").format(
                db, sql.Identifier(p["template"]), sql.Literal(p["encoding"]),
                sql.Literal(p["locale"]))
            if p["owner"]:
                stmt += sql.SQL(" OWNER {}").format(sql.Identifier(p["owner"]))
            if p["connection_limit"] is not None:
                stmt += sql.SQL(" CONNECTION LIMIT {}").format(sql.Literal(p["connection_limit"]))
            session.execute(stmt)
        else:
            if not same_encoding(before["encoding"], p["encoding"]) or before["locale"] != p["locale"]:
                session.fail(f"database {name!r} exists with encoding {before['encoding']} and "
                             f"locale {before['locale']}, not {p['encoding']} and {p['locale']}; "
                             "PostgreSQL cannot change them (dump, drop and re-create it)")
            if p["owner"] and before["owner"] != p["owner"]:
                session.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    db, sql.Identifier(p["owner"])))
            limit = p["connection_limit"]
            if limit is not None and before["connection_limit"] != limit:
                session.execute(sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT {}").format(
                    db, sql.Literal(limit)))
        if session.check_mode or not session.queries:
            after = dict(before or {"name": name, "owner": p["login_user"] or None,
                                    "encoding": p["encoding"], "locale": p["locale"],
                                    "connection_limit": -1})
            if p["owner"]:
                after["owner"] = p["owner"]
            if p["connection_limit"] is not None:
                after["connection_limit"] = p["connection_limit"]
        else:
            after = read_database(session, name)

    result = dict(changed=bool(session.queries), database=after, queries=session.queries)
    if module._diff:
        result["diff"] = dict(before=before or {}, after=after or {})
    session.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
