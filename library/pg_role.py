#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: a PostgreSQL role with its attributes, password and memberships."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_role
short_description: Create, alter or drop a PostgreSQL role
description:
  - Ensures a role exists with the given attributes, password and role memberships, or is absent.
  - Options left unset are not managed; a new role then gets PostgreSQL's defaults
    (C(NOLOGIN), C(NOREPLICATION), ...).
  - Every identifier is quoted; the password never appears in C(queries), the returned state,
    the diff or an error message.
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  name:
    description: Name of the role.
    type: str
    required: true
  state:
    description: Whether the role should exist.
    type: str
    choices: [present, absent]
    default: present
  login:
    description: C(LOGIN) attribute.
    type: bool
  replication:
    description: C(REPLICATION) attribute (may start streaming replication and create slots).
    type: bool
  superuser:
    description: C(SUPERUSER) attribute.
    type: bool
  createdb:
    description: C(CREATEDB) attribute.
    type: bool
  createrole:
    description: C(CREATEROLE) attribute.
    type: bool
  inherit:
    description: C(INHERIT) attribute.
    type: bool
  connection_limit:
    description: Maximum concurrent connections of the role, C(-1) for no limit.
    type: int
  password:
    description:
      - Password of the role. The module computes the SCRAM-SHA-256 verifier on the managed host
        (libpq's C(PQencryptPasswordConn)) and sends only that, so the server never sees the
        plain password, whatever C(password_encryption) or statement logging says.
      - With a superuser login the session also turns statement logging off, so the verifier
        does not reach the server log either.
      - An empty string removes the password (C(PASSWORD NULL)).
      - Never logged nor returned.
    type: str
  update_password:
    description:
      - C(always) converges the password on every run. Whether it changed is decided by
        recomputing the stored SCRAM verifier from O(password) with the stored salt and
        iteration count, so C(changed) is true only when the password really differs.
        That needs read access to C(pg_authid) (a superuser login); without it the module
        cannot tell and sets the password again, reporting C(changed=true).
      - C(on_create) sets the password only when the role is created.
    type: str
    choices: [always, on_create]
    default: always
  member_of:
    description:
      - The complete list of roles this role is a member of; memberships not listed are
        revoked. An empty list revokes all. Omit to leave memberships alone.
    type: list
    elements: str
attributes:
  check_mode:
    support: full
    description:
      - Reports the statements that would run, without running them.
      - A missing role, schema or table is a warning in check mode (an earlier task would create
        it), an error otherwise.
  diff_mode:
    support: full
    description: Shows the role's attributes and memberships before and after (never the password).
notes:
  - Dropping a role that owns objects or holds privileges fails with PostgreSQL's explanation.
"""

EXAMPLES = r"""
- name: Replication role on the exchange primary
  pg_role:
    login_host: /run/taler-ops/exchange
    login_port: 5441
    login_user: postgres
    login_db: postgres
    name: taler-replicator
    login: true
    replication: true
    password: "{{ replication_password }}"

- name: Non-login owner of the ingres tables
  pg_role:
    login_host: /run/taler-ops/ingres
    login_port: 5442
    login_db: postgres
    name: ingres-owner
    login: false
"""

RETURN = r"""
role:
  description: The role's attributes after the run (predicted in check mode); null when absent.
  returned: always
  type: dict
  sample:
    name: taler-replicator
    login: true
    replication: true
    superuser: false
    createdb: false
    createrole: false
    inherit: true
    connection_limit: -1
    member_of: []
    password_set: true
queries:
  description: Statements run (would run, in check mode); the password shows as C(********).
  returned: always
  type: list
  elements: str
  sample: ['CREATE ROLE "taler-replicator" WITH LOGIN REPLICATION', "ALTER ROLE \"taler-replicator\" PASSWORD '********'"]
password_changed:
  description: True when the password was (would be, in check mode) set by this run.
  returned: when the password was set
  type: bool
password_verified:
  description: Whether an existing password could be compared with O(password) (needs C(pg_authid) access).
  returned: when O(password) is given and the role existed
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import connection_argument_spec, require_psycopg
from ansible.module_utils.taler_pg_sql import MASK, Session, scram_matches

ATTRIBUTES = [  # option, pg_roles column, keyword
    ("superuser", "rolsuper", "SUPERUSER"),
    ("createdb", "rolcreatedb", "CREATEDB"),
    ("createrole", "rolcreaterole", "CREATEROLE"),
    ("inherit", "rolinherit", "INHERIT"),
    ("login", "rolcanlogin", "LOGIN"),
    ("replication", "rolreplication", "REPLICATION"),
]


def read_role(session, name):
    row = session.row(
        "SELECT r.*, ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " WHERE m.member = r.oid ORDER BY 1) AS member_of FROM pg_roles r WHERE r.rolname = %s", (name,))
    if row is None:
        return None
    state = {"name": name}
    for option, column, _ in ATTRIBUTES:
        state[option] = row[column]
    state["connection_limit"] = row["rolconnlimit"]
    state["member_of"] = list(row["member_of"])
    # pg_roles shows '********' whether a password is set or not: only pg_authid tells
    # (superuser); without access to it, assume one is set.
    verifier = read_verifier(session, name)
    state["password_set"] = verifier is not None if verifier is not False else True
    return state


def read_verifier(session, name):
    """The stored password verifier, or False if this login may not read pg_authid."""
    import psycopg
    try:
        row = session.conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                   (name,)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return False
    return row["rolpassword"] if row else None


def attribute_clause(p, current):
    from psycopg import sql
    words = []
    for option, _, keyword in ATTRIBUTES:
        want = p[option]
        if want is not None and (current is None or current[option] != want):
            words.append(sql.SQL(keyword if want else "NO" + keyword))
    limit = p["connection_limit"]
    if limit is not None and (current is None or current["connection_limit"] != limit):
        words.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(limit)))
    return words


def main():
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        login=dict(type="bool"),
        replication=dict(type="bool"),
        superuser=dict(type="bool"),
        createdb=dict(type="bool"),
        createrole=dict(type="bool"),
        inherit=dict(type="bool"),
        connection_limit=dict(type="int"),
        password=dict(type="str", no_log=True),
        update_password=dict(type="str", choices=["always", "on_create"], default="always",
                             no_log=False),
        member_of=dict(type="list", elements="str"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    from psycopg import sql

    p = module.params
    name = p["name"]
    session = Session(module, "database")
    session.keep_statements_out_of_server_log()
    before = read_role(session, name)
    result = dict(changed=False)
    role = sql.Identifier(name)

    if p["state"] == "absent":
        if before is not None:
            session.execute(sql.SQL("DROP ROLE {}").format(role))
        after = None
    else:
        after = dict(before) if before else {
            "name": name, "superuser": False, "createdb": False, "createrole": False,
            "inherit": True, "login": False, "replication": False, "connection_limit": -1,
            "member_of": [], "password_set": False}
        words = attribute_clause(p, before)
        if before is None:
            session.execute(sql.SQL("CREATE ROLE {}").format(role) + (
                sql.SQL(" WITH ") + sql.SQL(" ").join(words) if words else sql.SQL("")))
        elif words:
            session.execute(sql.SQL("ALTER ROLE {} WITH ").format(role) + sql.SQL(" ").join(words))
        for option, _, _ in ATTRIBUTES:
            if p[option] is not None:
                after[option] = p[option]
        if p["connection_limit"] is not None:
            after["connection_limit"] = p["connection_limit"]

        password = p["password"]
        if password is not None and (before is None or p["update_password"] == "always"):
            if password == "":
                if before is None or before["password_set"]:
                    if before is not None:
                        session.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(role))
                after["password_set"] = False
            else:
                needed = True
                if before is not None:
                    stored = read_verifier(session, name)
                    result["password_verified"] = stored is not False
                    if stored:
                        needed = not scram_matches(password, stored)
                    elif stored is None:
                        needed = True
                if needed:
                    result["password_changed"] = True
                    # libpq hashes on this host; the server only ever sees the verifier.
                    verifier = session.conn.pgconn.encrypt_password(
                        password.encode("utf-8"), name.encode("utf-8"), b"scram-sha-256").decode()
                    stmt = sql.SQL("ALTER ROLE {} PASSWORD {}")
                    session.execute(stmt.format(role, sql.Literal(verifier)),
                                    shown=stmt.format(role, sql.Literal(MASK)))
                after["password_set"] = True

        if p["member_of"] is not None:
            want = sorted(set(p["member_of"]))
            have = set(before["member_of"]) if before else set()
            missing = [g for g in want if not session.row(
                "SELECT 1 AS x FROM pg_roles WHERE rolname = %s", (g,))]
            if missing:
                session.missing(f"cannot make role {name!r} a member of missing role(s): "
                                + ", ".join(repr(g) for g in missing))
            for group in want:
                if group not in have:
                    session.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), role))
            for group in sorted(have - set(want)):
                session.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), role))
            after["member_of"] = want

        if not session.check_mode:
            after = read_role(session, name)

    result["changed"] = bool(session.queries)
    result["role"] = after
    result["queries"] = session.queries
    if module._diff:
        diff_before, diff_after = dict(before or {}), dict(after or {})
        if result.get("password_changed"):
            # Visible in the diff without showing either password.
            if before:
                diff_before["password"] = MASK if before["password_set"] else None
            diff_after["password"] = MASK + " (new)"
        result["diff"] = dict(before=diff_before, after=diff_after)
    session.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
