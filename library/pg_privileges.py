#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: a role's privileges on tables and functions of one schema, the schema,
the database and configuration parameters."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_privileges
short_description: Grant or revoke a role's privileges on tables, functions, a schema, a database and parameters
description:
  - Converges the privileges that one role holds directly (its own ACL entries, not those
    inherited through role membership or granted to C(PUBLIC)) on tables and functions of
    one schema, on that schema, on the connected database and on configuration parameters.
  - With O(exclusive=true) privileges of the role that are not listed are revoked, for each
    kind of object the task names — least privilege for a replication or sync role.
  - Every identifier is quoted. Statements are grouped, one C(GRANT) or C(REVOKE) per set of
    privileges.
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  role:
    description: Role that receives or loses the privileges. Must exist.
    type: str
    required: true
  schema:
    description: Schema of O(tables) and O(functions), and the object of O(schema_privileges).
    type: str
    default: public
  tables:
    description:
      - Tables (also views, materialized views, foreign tables) in O(schema), by name.
      - C([ALL]) means every such relation that exists in the schema at run time (partitions
        included); tables created later are not covered.
    type: list
    elements: str
    default: []
  privileges:
    description:
      - Table privileges on O(tables), C(SELECT), C(INSERT), C(UPDATE), C(DELETE), C(TRUNCATE),
        C(REFERENCES), C(TRIGGER), or C(ALL) for all of them.
    type: list
    elements: str
    default: []
  functions:
    description:
      - Functions in O(schema), by name (not procedures or aggregates); a name covers every
        overload of it. The objects of O(function_privileges).
    type: list
    elements: str
    default: []
  function_privileges:
    description:
      - Privileges on O(functions), C(EXECUTE) (or C(ALL)). Needed with O(functions).
      - C(EXECUTE) granted to C(PUBLIC) (PostgreSQL's default for a new function) is not the
        role's own; revoke it where the function is created.
    type: list
    elements: str
  schema_privileges:
    description: Privileges on O(schema), C(USAGE) and/or C(CREATE). Omit to leave them alone.
    type: list
    elements: str
  database_privileges:
    description:
      - Privileges on the connected database (O(login_db)), C(CONNECT), C(CREATE) and/or
        C(TEMPORARY) (C(TEMP)). Omit to leave them alone.
    type: list
    elements: str
  parameters:
    description:
      - Configuration parameters (PostgreSQL 15 or later), the objects of
        O(parameter_privileges), for example C(session_replication_role). Names are
        case-insensitive; a custom parameter is C(extension.name).
      - Parameter privileges belong to the whole instance (cluster), not to O(login_db).
    type: list
    elements: str
    default: []
  parameter_privileges:
    description:
      - Privileges on O(parameters), C(SET) and/or C(ALTER SYSTEM), or C(ALL) for both.
        Needed with O(parameters).
    type: list
    elements: str
  state:
    description:
      - C(present) grants the listed privileges; C(absent) revokes them.
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description:
      - With O(state=present), also revoke the role's other privileges on O(tables), on
        O(functions), on O(parameters), and, when O(schema_privileges) or
        O(database_privileges) are given, on the schema or database.
      - Privileges granted to C(PUBLIC) are not the role's own and stay.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description:
      - Reports the statements that would run, without running them.
      - A missing role, schema, table or function is a warning in check mode (an earlier task
        would create it), an error otherwise. An unknown parameter is always an error.
  diff_mode:
    support: full
    description: Shows the role's privileges on the named objects before and after.
"""

EXAMPLES = r"""
- name: Replication role may read the replicated tables and nothing else
  pg_privileges:
    login_host: /run/taler-ops/exchange
    login_port: 5441
    login_db: taler-exchange
    role: taler-replicator
    schema: exchange
    tables: [reserves, reserves_in, wire_targets]
    privileges: [SELECT]
    schema_privileges: [USAGE]
    database_privileges: [CONNECT]
    exclusive: true

- name: Sync role may only insert into the safe copy
  pg_privileges:
    login_host: /run/taler-ops/production
    login_port: 5443
    login_db: taler-exchange
    role: taler-sync
    schema: exchange
    tables: [ALL]
    privileges: [SELECT, INSERT]
    exclusive: true

- name: The sync may ask the safe copy's owner to ANALYZE a replicated table
  pg_privileges:
    login_host: /run/taler-ops/production
    login_port: 5443
    login_db: taler-auditor
    role: taler-sync
    schema: taler_ops
    functions: [analyze_exchange_table]
    function_privileges: [EXECUTE]
    exclusive: true

- name: The sync may switch triggers off for its own session on the safe copy (PostgreSQL 15)
  pg_privileges:
    login_host: /run/taler-ops/production
    login_port: 5443
    login_db: taler-auditor
    role: taler-sync
    parameters: [session_replication_role]
    parameter_privileges: [SET]
    exclusive: true
"""

RETURN = r"""
privileges:
  description: The role's privileges on the named objects after the run (predicted in check mode).
  returned: always
  type: dict
  sample:
    tables: {exchange.reserves: [SELECT], exchange.reserves_in: [SELECT]}
    functions: {}
    schema: [USAGE]
    database: [CONNECT]
    parameters: {session_replication_role: [SET]}
queries:
  description: Statements run (would run, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import connection_argument_spec, require_psycopg
from ansible.module_utils.taler_pg_sql import Session, qualified_text

TABLE_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
SCHEMA_PRIVILEGES = ["USAGE", "CREATE"]
DATABASE_PRIVILEGES = ["CONNECT", "CREATE", "TEMPORARY"]
PARAMETER_PRIVILEGES = ["SET", "ALTER SYSTEM"]
FUNCTION_PRIVILEGES = ["EXECUTE"]
ALIASES = {"TEMP": "TEMPORARY", "ALTER_SYSTEM": "ALTER SYSTEM"}


def normalise(module, values, allowed, what):
    if values is None:
        return None
    out = set()
    for value in values:
        word = " ".join(value.split()).upper()
        word = ALIASES.get(word, word)
        if word in ("ALL", "ALL PRIVILEGES"):
            out.update(allowed)
        elif word in allowed:
            out.add(word)
        else:
            module.fail_json(msg=f"unknown {what} privilege {value!r}; expected one of "
                             + ", ".join(allowed + ["ALL"]))
    return out


def acl_query(kind, catalog, acl, owner, where, name):
    # The ACL's NULL means "owner's defaults": acldefault makes them explicit.
    return (f"SELECT o.{name} AS name, ARRAY(SELECT a.privilege_type FROM aclexplode(coalesce(o.{acl}, "
            f"acldefault('{kind}', o.{owner}))) a WHERE a.grantee = %(roleoid)s) AS privs "
            f"FROM {catalog} o WHERE {where}")


TABLE_ACL = (
    "SELECT o.relname, ARRAY(SELECT a.privilege_type FROM aclexplode(coalesce(o.relacl, "
    "acldefault('r', o.relowner))) a WHERE a.grantee = %(roleoid)s) AS privs "
    "FROM pg_class o JOIN pg_namespace n ON n.oid = o.relnamespace "
    "WHERE n.nspname = %(schema)s AND o.relkind IN ('r', 'p', 'v', 'm', 'f')")


# Functions by the signature GRANT takes, every part quoted by the server (%% escapes
# psycopg's placeholders); a NULL ACL is the owner's defaults (EXECUTE to PUBLIC).
FUNCTION_ACL = (
    "SELECT format('%%I.%%I(%%s)', n.nspname, o.proname, "
    "pg_get_function_identity_arguments(o.oid)) AS signature, o.proname, "
    "ARRAY(SELECT a.privilege_type FROM aclexplode(coalesce(o.proacl, "
    "acldefault('f', o.proowner))) a WHERE a.grantee = %(roleoid)s) AS privs "
    "FROM pg_proc o JOIN pg_namespace n ON n.oid = o.pronamespace "
    "WHERE n.nspname = %(schema)s AND o.proname = ANY(%(functions)s) AND o.prokind = 'f'")


# A parameter with no pg_parameter_acl row has no grants at all (only superusers may
# set a superuser-only parameter); acldefault('p', ...) is that empty default.
PARAMETER_ACL = (
    "SELECT o.parname, ARRAY(SELECT a.privilege_type FROM aclexplode(o.paracl) a "
    "WHERE a.grantee = %(roleoid)s) AS privs FROM pg_parameter_acl o "
    "WHERE o.parname = ANY(%(parameters)s)")


def parameter_sql(name):
    """A parameter name as GRANT ... ON PARAMETER takes it: dotted parts, each quoted."""
    from psycopg import sql
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def ordered(privs, allowed):
    return [p for p in allowed if p in privs]


def plan(changes, grant, things, kind, name_sql, role):
    """One statement per distinct privilege set: {name: set} -> [Composed]."""
    from psycopg import sql
    groups = {}
    for name, privs in changes.items():
        if privs:
            groups.setdefault(frozenset(privs), []).append(name)
    stmts = []
    for privs, names in sorted(groups.items(), key=lambda kv: sorted(kv[1])):
        words = sql.SQL(", ").join(sql.SQL(p) for p in ordered(privs, things))
        objects = sql.SQL(kind + " ") + sql.SQL(", ").join(name_sql(n) for n in sorted(names))
        if grant:
            stmts.append(sql.SQL("GRANT {} ON {} TO {}").format(words, objects, role))
        else:
            stmts.append(sql.SQL("REVOKE {} ON {} FROM {}").format(words, objects, role))
    return stmts


def main():
    spec = connection_argument_spec()
    spec.update(
        role=dict(type="str", required=True),
        schema=dict(type="str", default="public"),
        tables=dict(type="list", elements="str", default=[]),
        privileges=dict(type="list", elements="str", default=[]),
        schema_privileges=dict(type="list", elements="str"),
        database_privileges=dict(type="list", elements="str"),
        functions=dict(type="list", elements="str", default=[]),
        function_privileges=dict(type="list", elements="str"),
        parameters=dict(type="list", elements="str", default=[]),
        parameter_privileges=dict(type="list", elements="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        exclusive=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    from psycopg import sql

    p = module.params
    want_tables = normalise(module, p["privileges"], TABLE_PRIVILEGES, "table")
    want_schema = normalise(module, p["schema_privileges"], SCHEMA_PRIVILEGES, "schema")
    want_db = normalise(module, p["database_privileges"], DATABASE_PRIVILEGES, "database")
    want_params = normalise(module, p["parameter_privileges"], PARAMETER_PRIVILEGES, "parameter")
    want_funcs = normalise(module, p["function_privileges"], FUNCTION_PRIVILEGES, "function")
    if (want_funcs is None) != (not p["functions"]):
        module.fail_json(msg="functions and function_privileges go together")
    if (want_params is None) != (not p["parameters"]):
        module.fail_json(msg="parameters and parameter_privileges go together")
    parameters = []
    for name in p["parameters"]:
        name = name.strip().lower()
        if not name or any(not part for part in name.split(".")):
            module.fail_json(msg=f"malformed parameter name {name!r}")
        if name not in parameters:
            parameters.append(name)
    present = p["state"] == "present"
    exclusive = p["exclusive"] and present
    schema = p["schema"]

    session = Session(module, "database")
    role_row = session.row("SELECT oid FROM pg_roles WHERE rolname = %s", (p["role"],))
    if role_row is None:
        session.missing(f"role {p['role']!r} does not exist")
    args = {"roleoid": role_row["oid"] if role_row else None, "schema": schema}
    schema_row = session.row(acl_query("n", "pg_namespace", "nspacl", "nspowner",
                                       "o.nspname = %(schema)s", "nspname"), args)
    if schema_row is None and (p["tables"] or p["functions"] or want_schema is not None):
        session.missing(f"schema {schema!r} does not exist in database {p['login_db']!r}")

    # Current table privileges: {table: set}
    have_tables = {}
    if p["tables"]:
        rows = session.rows(TABLE_ACL, args)
        existing = {r["relname"]: set(r["privs"]) for r in rows}
        if [t.upper() for t in p["tables"]] == ["ALL"]:
            have_tables = existing
        else:
            missing = [t for t in p["tables"] if t not in existing]
            if missing:
                session.missing("no such table in schema %r of database %r: %s" % (
                    schema, p["login_db"], ", ".join(missing)))
            have_tables = {t: existing.get(t, set()) for t in p["tables"]}
    # Current function privileges: {signature: set}
    have_funcs = {}
    if p["functions"]:
        rows = session.rows(FUNCTION_ACL, dict(args, functions=p["functions"]))
        missing = [f for f in p["functions"] if f not in {r["proname"] for r in rows}]
        if missing:
            session.missing("no such function in schema %r of database %r: %s" % (
                schema, p["login_db"], ", ".join(missing)))
        have_funcs = {r["signature"]: set(r["privs"]) for r in rows}
    have_schema = set(schema_row["privs"]) if schema_row else set()
    db_row = session.row(acl_query("d", "pg_database", "datacl", "datdba",
                                   "o.datname = current_database()", "datname"), args)
    have_db = set(db_row["privs"])

    have_params = {}
    if parameters:
        if session.server_version < 150000:
            session.fail("privileges on parameters need PostgreSQL 15 or later; this server is "
                         f"{session.server_version // 10000}")
        known = {r["name"] for r in session.rows(
            "SELECT name FROM pg_settings WHERE name = ANY(%(parameters)s)",
            {"parameters": parameters})}
        # A custom (dotted) parameter need not be defined yet: GRANT accepts a placeholder.
        unknown = [n for n in parameters if n not in known and "." not in n]
        if unknown:
            session.fail("unknown configuration parameter(s): " + ", ".join(unknown))
        acl = {r["parname"]: set(r["privs"]) for r in session.rows(
            PARAMETER_ACL, dict(args, parameters=parameters))}
        have_params = {n: acl.get(n, set()) for n in parameters}

    role = sql.Identifier(p["role"])
    after_tables = {}
    stmts = []
    grants, revokes = {}, {}
    for table, have in have_tables.items():
        if present:
            grants[table] = want_tables - have
            revokes[table] = (have - want_tables) if exclusive else set()
            after_tables[table] = (have | want_tables) - revokes[table]
        else:
            revokes[table] = have & want_tables
            after_tables[table] = have - revokes[table]
    table_sql = lambda t: sql.Identifier(schema, t)  # noqa: E731
    stmts += plan(revokes, False, TABLE_PRIVILEGES, "TABLE", table_sql, role)
    stmts += plan(grants, True, TABLE_PRIVILEGES, "TABLE", table_sql, role)

    after_funcs = {}
    if want_funcs is not None:
        grants, revokes = {}, {}
        for signature, have in have_funcs.items():
            if present:
                grants[signature] = want_funcs - have
                revokes[signature] = (have - want_funcs) if exclusive else set()
            else:
                grants[signature], revokes[signature] = set(), have & want_funcs
            after_funcs[signature] = (have | grants[signature]) - revokes[signature]
        # The signature is the server's own quoting (FUNCTION_ACL), not the task's text.
        stmts += plan(revokes, False, FUNCTION_PRIVILEGES, "FUNCTION", sql.SQL, role)
        stmts += plan(grants, True, FUNCTION_PRIVILEGES, "FUNCTION", sql.SQL, role)

    after_params = {}
    if want_params is not None:
        grants, revokes = {}, {}
        for name, have in have_params.items():
            if present:
                grants[name] = want_params - have
                revokes[name] = (have - want_params) if exclusive else set()
            else:
                grants[name], revokes[name] = set(), have & want_params
            after_params[name] = (have | grants[name]) - revokes[name]
        stmts += plan(revokes, False, PARAMETER_PRIVILEGES, "PARAMETER", parameter_sql, role)
        stmts += plan(grants, True, PARAMETER_PRIVILEGES, "PARAMETER", parameter_sql, role)

    def converge(want, have, things, kind, target):
        if want is None:
            return have
        if present:
            add, drop = want - have, (have - want) if exclusive else set()
        else:
            add, drop = set(), have & want
        stmts.extend(plan({"x": drop}, False, things, kind, lambda _: target, role))
        stmts.extend(plan({"x": add}, True, things, kind, lambda _: target, role))
        return (have | add) - drop

    after_schema = converge(want_schema, have_schema, SCHEMA_PRIVILEGES, "SCHEMA",
                            sql.Identifier(schema))
    after_db = converge(want_db, have_db, DATABASE_PRIVILEGES, "DATABASE",
                        sql.Identifier(db_row["name"]))

    for stmt in stmts:
        session.execute(stmt)

    def view(tables, funcs, schema_privs, db_privs, params):
        return {"tables": {qualified_text(schema, t): ordered(v, TABLE_PRIVILEGES)
                           for t, v in sorted(tables.items())},
                "functions": {f: ordered(v, FUNCTION_PRIVILEGES) for f, v in sorted(funcs.items())},
                "schema": ordered(schema_privs, SCHEMA_PRIVILEGES),
                "database": ordered(db_privs, DATABASE_PRIVILEGES),
                "parameters": {n: ordered(v, PARAMETER_PRIVILEGES) for n, v in sorted(params.items())}}

    before = view(have_tables, have_funcs, have_schema, have_db, have_params)
    after = view(after_tables, after_funcs or have_funcs, after_schema, after_db,
                 after_params or have_params)
    result = dict(changed=bool(session.queries), privileges=after, queries=session.queries)
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    session.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
