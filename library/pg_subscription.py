#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: a logical-replication subscription, converged option by option."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_subscription
short_description: Create, converge, enable, disable, refresh or drop a PostgreSQL logical-replication subscription
description:
  - Ensures a subscription exists in the connected database with the given publications,
    connection and parameters, or is absent.
  - Converges everything PostgreSQL can C(ALTER) on an existing subscription - O(enabled),
    O(slot_name), O(synchronous_commit), O(binary), O(streaming), O(disable_on_error),
    O(publications) and O(connection), and on newer servers O(origin), O(password_required),
    O(run_as_owner) (PostgreSQL 16) and O(failover) (PostgreSQL 17) - so a changed setting is
    applied, not ignored.
  - Every option left out of the task is left as it is on an existing subscription; a new one
    gets the default each option names. So an existing subscription is paused, resumed or
    refreshed by its O(name) alone (O(enabled), O(state=refresh)), without restating its
    O(connection) and O(publications), which only its creation needs.
  - The options newer servers add are used only when the task sets them, and only when the
    connected server has them (C(server_version_num)); asking for one on an older server fails
    the task with the version it needs. Left unset, the statements are those of PostgreSQL 15.
  - The connection string is built with libpq's own quoting, and the stored one
    (C(pg_subscription.subconninfo)) is compared key by key, the password included;
    the password never appears in C(queries), the returned state, the diff or an error.
  - Before creating the subscription or changing its connection or publications, the module
    connects to the publisher with the same connection settings and checks that every
    publication exists, since PostgreSQL itself accepts an unknown publication and only the
    apply worker fails later. An unreachable publisher or a malformed connection fails the task
    with a clear message.
  - With a superuser login the session turns statement logging off (C(log_statement),
    C(log_min_error_statement), C(log_min_duration_statement)), so neither a successful nor a
    failing statement writes the connection string into the server log.
  - All statements run in autocommit mode; C(CREATE SUBSCRIPTION) with slot creation cannot run
    in a transaction block.
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  name:
    description: Name of the subscription.
    type: str
    required: true
  state:
    description:
      - C(present) creates or converges the subscription.
      - C(refresh) does the same and then runs C(ALTER SUBSCRIPTION ... REFRESH PUBLICATION)
        when the publications on the publisher list tables the subscription does not have (it
        fetches them, with O(copy_data)) or no longer list tables it has (it drops them from the
        subscription); the module asks the publisher, as for O(validate_publisher). With
        O(validate_publisher=false), or when the publisher cannot be asked in check mode, it
        cannot know and always refreshes. Reports C(changed) only when the refresh ran (would
        run). Not needed right after creation, and not possible while disabled.
      - C(absent) drops it, with its replication slot on the publisher unless O(drop_slot=false).
    type: str
    choices: [present, absent, refresh]
    default: present
  publications:
    description:
      - Publications on the publisher to subscribe to (the complete list).
      - Required to create the subscription; omit to leave an existing one's.
    type: list
    elements: str
  connection:
    description:
      - How the subscriber's server connects to the publisher. Keys left out are not put into
        the connection string.
      - Required to create the subscription; omit to leave an existing one's (the stored
        connection is then also what O(state=refresh) asks the publisher with).
    type: dict
    suboptions:
      host:
        description: Publisher host name, address or socket directory.
        type: str
      port:
        description: Publisher port.
        type: int
      dbname:
        description: Publisher database.
        type: str
        required: true
      user:
        description: Replication role on the publisher.
        type: str
      password:
        description: Its password. Never logged nor returned.
        type: str
      sslmode:
        description: libpq C(sslmode); use C(verify-full) across hosts.
        type: str
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      sslrootcert:
        description: CA certificate file, as seen by the subscriber's server process.
        type: str
      sslcert:
        description: Client certificate file, as seen by the subscriber's server process.
        type: str
      sslkey:
        description: Client key file, as seen by the subscriber's server process.
        type: str
      options:
        description: Server options for the publisher session, for example C(-crow_security=off).
        type: str
      connect_timeout:
        description: Seconds to wait for the publisher.
        type: int
      application_name:
        description: C(application_name) shown on the publisher.
        type: str
      extra:
        description: Further libpq keywords; an unknown keyword fails the task.
        type: dict
  enabled:
    description:
      - Whether the subscription replicates (C(ALTER SUBSCRIPTION ... ENABLE) or C(DISABLE)).
      - Omit to leave it (a new subscription is enabled).
    type: bool
  slot_name:
    description:
      - Replication slot on the publisher; a new subscription creates it (default the
        subscription's name).
      - Changing it on an existing subscription only points the subscription at another slot,
        which must already exist on the publisher; the module disables the subscription for the
        change and re-enables it when O(enabled=true). C(NONE) detaches the slot.
      - Omit to leave it.
    type: str
  synchronous_commit:
    description:
      - C(synchronous_commit) of the apply worker.
      - Omit to leave it (a new subscription gets C(off)).
    type: str
    choices: ['off', 'local', 'remote_write', 'remote_apply', 'on']
  binary:
    description:
      - Request the binary format for the data transfer.
      - Omit to leave it (a new subscription gets C(false)).
    type: bool
  streaming:
    description:
      - Stream large in-progress transactions. C(true) or C(false); C(parallel) (apply them with
        parallel workers) needs PostgreSQL 16 or later.
      - Omit to leave it (a new subscription gets C(false)).
    type: raw
  disable_on_error:
    description:
      - Disable the subscription on an apply error instead of retrying forever.
      - Omit to leave it (a new subscription gets C(false)).
    type: bool
  origin:
    description:
      - C(none) replicates only changes that originated on the publisher (no changes it applied
        itself from another subscription); C(any) replicates all. PostgreSQL 16 or later.
      - Omit to leave it (a new subscription gets the server's default, C(any)).
    type: str
    choices: [none, any]
  password_required:
    description:
      - Whether the publisher connection must use a password (C(false) needs a superuser).
        PostgreSQL 16 or later. Omit to leave it (server default C(true)).
    type: bool
  run_as_owner:
    description:
      - Apply changes as the subscription's owner instead of as each table's owner.
        PostgreSQL 16 or later. Omit to leave it (server default C(false)).
    type: bool
  failover:
    description:
      - Let the slot on the publisher be synchronised to its standbys (PostgreSQL 17 or later).
        PostgreSQL changes it only while the subscription is disabled; the module disables it
        for the change and re-enables it when O(enabled=true). Omit to leave it.
    type: bool
  copy_data:
    description: Copy the tables' existing rows on creation, on new publications and on refresh.
    type: bool
    default: true
  create_slot:
    description: Create the slot when creating the subscription (creation only).
    type: bool
    default: true
  owner:
    description: Owner of the subscription (PostgreSQL 15 requires a superuser). Omit to leave it.
    type: str
  drop_slot:
    description:
      - With O(state=absent), also drop the replication slot on the publisher (needs the
        publisher). C(false) detaches the slot first and leaves it on the publisher, where it
        retains WAL until someone drops it there.
    type: bool
    default: true
  validate_publisher:
    description:
      - Connect to the publisher from the managed host to check the connection and the
        publications before creating the subscription or changing them, and to find out
        whether O(state=refresh) has anything to fetch. Turn off only when the managed host
        cannot reach the publisher the way the server does.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description:
      - Validates against the publisher and reports the statements that would run.
      - A failed validation is a warning in check mode, since earlier tasks that would create
        the publisher's role or publication did not run either.
  diff_mode:
    support: full
    description: Shows the subscription before and after; a changed password shows as a marker only.
notes:
  - Reading C(pg_subscription.subconninfo) needs a superuser login; PostgreSQL 15 also needs
    one to create subscriptions.
  - Create a publication before the subscriber's slot reaches it; adding a publication that was
    created after the slot's position makes the publisher's walsender fail with "publication
    does not exist" while it decodes older WAL (PostgreSQL 15 behaviour), which O(disable_on_error)
    turns into a disabled subscription.
  - The connection string, password included, is stored in the subscriber's catalog in plain
    text (PostgreSQL's design); protect superuser access to the subscriber instance.
"""

EXAMPLES = r"""
- name: Subscribe the ingres copy to the exchange
  pg_subscription:
    login_host: /run/taler-ops/ingres
    login_port: 5442
    login_db: taler-ingres
    name: taler_ingres
    publications: [taler_auditor]
    connection:
      host: exchange.example
      port: 5432
      dbname: taler-exchange
      user: taler-replicator
      password: "{{ replication_password }}"
      sslmode: verify-full
      sslrootcert: /etc/taler-ops/ca.crt
      options: -crow_security=off
    disable_on_error: true

- name: Pause the subscription (nothing else about it changes)
  pg_subscription:
    login_host: /run/taler-ops/ingres
    login_port: 5442
    login_db: taler-ingres
    name: taler_ingres
    enabled: false

- name: Resume it and pick up tables added to its publications (if there are any)
  pg_subscription:
    login_host: /run/taler-ops/ingres
    login_port: 5442
    login_db: taler-ingres
    name: taler_ingres
    enabled: true
    state: refresh
"""

RETURN = r"""
subscription:
  description:
    - The subscription after the run (predicted in check mode); null when absent.
    - C(connection) is the parsed connection string without the password; C(password_set)
      says whether it holds one.
  returned: always
  type: dict
  sample:
    name: taler_ingres
    enabled: true
    publications: [taler_auditor]
    slot_name: taler_ingres
    synchronous_commit: "off"
    binary: false
    streaming: false
    disable_on_error: true
    owner: postgres
    origin: any  # PostgreSQL 16 or later: also password_required and run_as_owner; 17: failover
    connection: {host: exchange.example, port: "5432", dbname: taler-exchange, user: taler-replicator,
                 sslmode: verify-full, options: -crow_security=off}
    password_set: true
tables:
  description: Subscribed tables and their synchronisation state (init, data copy, finished copy, synchronized, ready).
  returned: when the subscription exists after the run
  type: dict
  sample: {exchange.reserves: ready}
worker:
  description: The apply worker from C(pg_stat_subscription) (null if none runs).
  returned: when the subscription exists after the run
  type: dict
  sample: {pid: 4242, received_lsn: 0/1A2B3C8, latest_end_time: "2026-11-27 10:00:00+00"}
refreshed:
  description:
    - Whether C(REFRESH PUBLICATION) ran (would run, in check mode), or a changed O(publications)
      refreshed the subscription with C(SET PUBLICATION).
  returned: always
  type: bool
queries:
  description: Statements run (would run, in check mode); the password shows as C(password=********).
  returned: always
  type: list
  elements: str
  sample: ["CREATE SUBSCRIPTION \"taler_ingres\" CONNECTION 'host=exchange.example dbname=taler-exchange password=********' PUBLICATION \"taler_auditor\" WITH (...)"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import SSL_MODES, connection_argument_spec, require_psycopg
from ansible.module_utils.taler_pg_options import (
    SUBSCRIPTION_SET_WHEN_DISABLED, UnsupportedOption, check_subscription_options,
    normalize_streaming, streaming_from_catalog, subscription_catalog_query,
    subscription_changed_options, subscription_create_options, subscription_create_sql,
    subscription_set_sql, subscription_state_from_row, subscription_want, with_options)
from ansible.module_utils.taler_pg_sql import MASK, Session, error_text, qualified_text

CONNECTION_KEYS = ["host", "port", "dbname", "user", "password", "sslmode", "sslrootcert",
                   "sslcert", "sslkey", "options", "connect_timeout", "application_name"]
SYNC_STATES = {"i": "init", "d": "data copy", "f": "finished copy", "s": "synchronized", "r": "ready"}


def desired_connection(module):
    """{keyword: str} from the connection option; fails on an unknown or malformed keyword."""
    from psycopg import conninfo as pgconninfo
    import psycopg
    given = module.params["connection"]
    params = {k: str(given[k]) for k in CONNECTION_KEYS if given.get(k) not in (None, "")}
    for key, value in (given.get("extra") or {}).items():
        if key in params or key in CONNECTION_KEYS:
            module.fail_json(msg=f"connection.extra.{key} duplicates connection.{key}")
        params[key] = str(value)
    try:
        # libpq parses what make_conninfo renders: bad keywords and values surface here.
        pgconninfo.conninfo_to_dict(pgconninfo.make_conninfo(**params))
    except psycopg.ProgrammingError as exc:
        module.fail_json(msg="bad connection for subscription %r: %s" % (
            module.params["name"], mask_password(str(exc).strip(), params.get("password"))))
    return params


def mask_password(text, password):
    return text.replace(password, MASK) if password else text


def render_conninfo(params, masked=False):
    from psycopg import conninfo as pgconninfo
    if masked and "password" in params:
        params = dict(params, password=MASK)
    return pgconninfo.make_conninfo(**params)


def public_connection(params):
    return {k: params[k] for k in sorted(params) if k != "password"}


def read_subscription(session, name):
    import psycopg
    from psycopg import conninfo as pgconninfo
    try:
        row = session.conn.execute(subscription_catalog_query(session.server_version),
                                   (name,)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        session.fail("reading pg_subscription.subconninfo needs a superuser login "
                     f"(login_user {session.module.params['login_user']!r} is not one)")
    if row is None:
        return None
    try:
        conn = pgconninfo.conninfo_to_dict(row["subconninfo"])
    except psycopg.ProgrammingError:
        conn = {}
    return {
        "oid": row["oid"],
        "name": name,
        "enabled": row["subenabled"],
        "publications": sorted(row["subpublications"]),
        "slot_name": row["subslotname"] if row["subslotname"] is not None else "NONE",
        "synchronous_commit": row["subsynccommit"],
        "binary": row["subbinary"],
        "streaming": streaming_from_catalog(row["substream"]),
        "disable_on_error": row["subdisableonerr"],
        "owner": row["owner"],
        "connection": {k: str(v) for k, v in conn.items()},
        **subscription_state_from_row(row, session.server_version),
    }


def view(state, password_note=None):
    """The state as returned: no oid, no password."""
    if state is None:
        return None
    out = {k: v for k, v in state.items() if k != "oid"}
    out["password_set"] = "password" in state["connection"]
    out["connection"] = public_connection(state["connection"])
    if password_note:
        out["connection"]["password"] = password_note
    return out


def validate_publisher(module, params, publications):
    """Connect like the subscriber will and check the publications; fail clearly otherwise.

    Returns the tables the publications list (``schema.table`` texts), what a refresh would
    subscribe to; None when that is unknown (a problem only warned about in check mode).
    """
    from ansible.module_utils.taler_ops.db import connect
    from ansible.module_utils.taler_ops.errors import TalerOpsError
    import psycopg
    params = dict(params)
    params.setdefault("connect_timeout", str(module.params["connect_timeout"]))
    name = module.params["name"]

    problems = []

    def problem(msg, **extra):
        problems.append(msg)
        if module.check_mode:
            module.warn(msg + " (check mode: assuming earlier tasks would have fixed it)")
        else:
            module.fail_json(msg=msg, changed=False, **extra)

    try:
        conn = connect(render_conninfo(params), "publisher", autocommit=True)
    except TalerOpsError as exc:
        problem(f"subscription {name!r}: " + mask_password(str(exc), params.get("password")),
                exit_code=exc.exit_code)
        return None
    try:
        found = {r[0] for r in conn.execute(
            "SELECT pubname FROM pg_publication WHERE pubname = ANY(%s)", (publications,))}
        level = conn.execute("SHOW wal_level").fetchone()[0]
        may_replicate = conn.execute(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        # The initial copy reads each table as this role; without access it fails in a loop.
        unreadable = [qualified_text(s, t) for s, t in conn.execute(
            "SELECT DISTINCT schemaname, tablename FROM pg_publication_tables"
            " WHERE pubname = ANY(%s) AND NOT (has_schema_privilege(schemaname, 'USAGE')"
            " AND has_table_privilege(format('%%I.%%I', schemaname, tablename), 'SELECT'))"
            " ORDER BY 1, 2", (publications,))]
        published = {qualified_text(s, t) for s, t in conn.execute(
            "SELECT DISTINCT schemaname, tablename FROM pg_publication_tables"
            " WHERE pubname = ANY(%s)", (publications,))}
    except psycopg.Error as exc:
        problem(f"subscription {name!r}: reading the publisher's publications failed: "
                + error_text(exc))
        return None
    finally:
        conn.close()
    missing = [p for p in publications if p not in found]
    where = " ".join(f"{k}={params[k]}" for k in ("host", "port", "dbname") if k in params)
    if missing:
        problem(f"subscription {name!r}: no such publication on the publisher ({where}): "
                + ", ".join(missing))
    user = params.get("user", "(default user)")
    if not may_replicate:
        problem(f"subscription {name!r}: role {user!r} on the publisher ({where}) "
                "lacks the REPLICATION attribute")
    if unreadable and module.params["copy_data"]:
        problem(f"subscription {name!r}: role {user!r} on the publisher ({where}) "
                "cannot read published table(s) " + ", ".join(unreadable)
                + " (needs USAGE on the schema and SELECT on the table)")
    if level != "logical":
        problem(f"subscription {name!r}: the publisher ({where}) runs with "
                f"wal_level={level}; logical replication needs wal_level=logical")
    return None if problems else published


def read_progress(session, oid):
    tables = session.rows(
        "SELECT n.nspname, c.relname, sr.srsubstate FROM pg_subscription_rel sr"
        " JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE sr.srsubid = %s ORDER BY 1, 2", (oid,))
    worker = session.row(
        "SELECT pid, received_lsn::text AS received_lsn, latest_end_lsn::text AS latest_end_lsn,"
        " latest_end_time::text AS latest_end_time FROM pg_stat_subscription"
        " WHERE subid = %s AND relid IS NULL", (oid,))
    return ({qualified_text(t["nspname"], t["relname"]): SYNC_STATES.get(t["srsubstate"], t["srsubstate"])
             for t in tables}, worker)


def main():
    spec = connection_argument_spec()
    conn_spec = {k: dict(type="str") for k in CONNECTION_KEYS}
    conn_spec.update(port=dict(type="int"), connect_timeout=dict(type="int"),
                     dbname=dict(type="str", required=True),
                     password=dict(type="str", no_log=True),
                     sslmode=dict(type="str", choices=SSL_MODES),
                     extra=dict(type="dict"))
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent", "refresh"], default="present"),
        publications=dict(type="list", elements="str"),
        connection=dict(type="dict", options=conn_spec),
        # None: left as it is (a new subscription gets SUBSCRIPTION_CREATE_DEFAULTS).
        enabled=dict(type="bool"),
        slot_name=dict(type="str"),
        synchronous_commit=dict(type="str",
                                choices=["off", "local", "remote_write", "remote_apply", "on"]),
        binary=dict(type="bool"),
        streaming=dict(type="raw"),
        disable_on_error=dict(type="bool"),
        origin=dict(type="str", choices=["none", "any"]),
        password_required=dict(type="bool"),
        run_as_owner=dict(type="bool"),
        failover=dict(type="bool"),
        copy_data=dict(type="bool", default=True),
        create_slot=dict(type="bool", default=True),
        owner=dict(type="str"),
        drop_slot=dict(type="bool", default=True),
        validate_publisher=dict(type="bool", default=True),
    )
    # publications and connection are required only to create: checked once the catalog is read.
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    from psycopg import sql

    p = module.params
    name = p["name"]
    try:
        if p["streaming"] is not None:
            p["streaming"] = normalize_streaming(p["streaming"])
    except ValueError as exc:
        module.fail_json(msg=f"subscription {name!r}: {exc}")
    session = Session(module, "subscriber database")
    if p["state"] != "absent":
        try:
            check_subscription_options(name, p, session.server_version)
        except UnsupportedOption as exc:
            session.fail(str(exc))
    session.keep_statements_out_of_server_log()
    before = read_subscription(session, name)
    sub = sql.Identifier(name)
    result = dict(refreshed=False)
    after = None
    password_note = None

    if p["state"] == "absent":
        if before is not None:
            if not p["drop_slot"] and before["slot_name"] != "NONE":
                # DROP would connect to the publisher to drop the slot; detach it first.
                if before["enabled"]:
                    session.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sub))
                session.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sub))
            session.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sub))
    elif p["publications"] == []:
        module.fail_json(msg=f"subscription {name!r}: publications must not be empty")
    elif before is None and not (p["publications"] and p["connection"]):
        # Nothing to enable, disable or refresh; in check mode an earlier task may create it.
        session.missing(f"subscription {name!r} does not exist; creating it needs "
                        + " and ".join(k for k in ("publications", "connection") if not p[k]))
    else:
        given_conn = desired_connection(module) if p["connection"] else None
        want = subscription_want(p, creating=before is None)
        # What the task leaves out stays as it is.
        want_conn = given_conn if given_conn is not None else before["connection"]
        publications = (sorted(set(p["publications"])) if p["publications"] is not None
                        else before["publications"])
        conn_changed = before is not None and before["connection"] != want_conn
        pubs_changed = before is not None and before["publications"] != publications
        refresh = p["state"] == "refresh" and before is not None
        published = None
        if p["validate_publisher"] and (before is None or conn_changed or pubs_changed or refresh):
            published = validate_publisher(module, want_conn, publications)

        if before is None:
            options = subscription_create_options(want, p["copy_data"], p["create_slot"])
            session.execute(
                subscription_create_sql(name, render_conninfo(want_conn), publications, options),
                shown=subscription_create_sql(name, render_conninfo(want_conn, masked=True),
                                              publications, options))
        else:
            enabled = before["enabled"]
            want_enabled = want.get("enabled", enabled)
            changed_params = subscription_changed_options(want, before)
            # slot_name and (PostgreSQL 17) failover change only on a disabled subscription
            slot_change = any(k in changed_params for k in SUBSCRIPTION_SET_WHEN_DISABLED)
            if slot_change and enabled:
                session.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sub))
                enabled = False
            if conn_changed:
                stmt = sql.SQL("ALTER SUBSCRIPTION {} CONNECTION {}")
                session.execute(stmt.format(sub, sql.Literal(render_conninfo(want_conn))),
                                shown=stmt.format(sub, sql.Literal(render_conninfo(want_conn,
                                                                                   masked=True))))
                if before["connection"].get("password") != want_conn.get("password"):
                    password_note = MASK + " (new)"
            if changed_params:
                session.execute(subscription_set_sql(name, changed_params))
            if want_enabled and not enabled:
                session.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sub))
                enabled = True
            if pubs_changed:
                # A refresh (fetching the new publications' tables) needs an enabled subscription.
                opts = {"refresh": enabled}
                if enabled:
                    opts["copy_data"] = p["copy_data"]
                session.execute(sql.SQL("ALTER SUBSCRIPTION {} SET PUBLICATION {} WITH {}").format(
                    sub, sql.SQL(", ").join(sql.Identifier(x) for x in publications),
                    with_options(opts)))
            if not want_enabled and enabled:
                session.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sub))
                enabled = False
            if refresh and pubs_changed and enabled:
                result["refreshed"] = True  # SET PUBLICATION above refreshed already
            elif refresh:
                if not enabled:
                    session.fail(f"subscription {name!r} is disabled; PostgreSQL refreshes only "
                                 "enabled subscriptions (set enabled: true)")
                subscribed, _ = read_progress(session, before["oid"])
                # Unknown (not asked, or not answering in check mode): refresh to be sure.
                if published is None or published != set(subscribed):
                    session.execute(sql.SQL(
                        "ALTER SUBSCRIPTION {} REFRESH PUBLICATION WITH {}").format(
                            sub, with_options({"copy_data": p["copy_data"]})))
                    result["refreshed"] = True
        if p["owner"] and (before is None or before["owner"] != p["owner"]):
            session.execute(sql.SQL("ALTER SUBSCRIPTION {} OWNER TO {}").format(
                sub, sql.Identifier(p["owner"])))

        if session.check_mode or not session.queries:
            after = dict(before or {"oid": None, "name": name, "slot_name": name,
                                    "owner": p["login_user"] or None})
            after.update(want, publications=publications, connection=want_conn)
            if p["owner"]:
                after["owner"] = p["owner"]
        else:
            after = read_subscription(session, name)
        if after.get("oid") is not None:
            result["tables"], result["worker"] = read_progress(session, after["oid"])

    result["changed"] = bool(session.queries)
    result["subscription"] = view(after)
    result["queries"] = session.queries
    if module._diff:
        before_note = MASK if password_note and before and "password" in before["connection"] else None
        result["diff"] = dict(before=view(before, before_note) or {},
                              after=view(after, password_note) or {})
    session.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
