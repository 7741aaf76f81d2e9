# -*- coding: utf-8 -*-
"""Which publication and subscription options the connected server has, and the SQL for them.

Pure functions of the module parameters and the server's ``server_version_num``, so the
statements generated for PostgreSQL 15, 16, 17 and 18 are unit-tested without those
servers (tests/test_pg_options.py).  Used by library/pg_subscription.py and
library/pg_publication.py.

An option a newer server added is used only when the task sets it (``None`` leaves it
alone, and leaves the statement exactly as on PostgreSQL 15); asking for it on a server
that lacks it is refused with the version that introduced it.
"""

from __future__ import annotations

# option -> (first server_version_num, pg_subscription column)
SUBSCRIPTION_NEWER_OPTIONS = {
    "origin": (160000, "suborigin"),
    "password_required": (160000, "subpasswordrequired"),
    "run_as_owner": (160000, "subrunasowner"),
    "failover": (170000, "subfailover"),
}
# The options CREATE takes from ``want``, in this order, then the creation-only ones.
SUBSCRIPTION_PARAMETERS = ["slot_name", "synchronous_commit", "binary", "streaming",
                           "disable_on_error", "origin", "password_required", "run_as_owner",
                           "failover"]
# What CREATE states for the options a task leaves unset (PostgreSQL's own defaults, written
# out so the statement says what the subscription gets); an existing one keeps its values.
SUBSCRIPTION_CREATE_DEFAULTS = {"enabled": True, "synchronous_commit": "off", "binary": False,
                                "streaming": False, "disable_on_error": False}
# ALTER SUBSCRIPTION ... SET refuses these on an enabled subscription.
SUBSCRIPTION_SET_WHEN_DISABLED = ("slot_name", "failover")
STREAMING_PARALLEL_SINCE = 160000

# option -> (first server_version_num, pg_publication column)
PUBLICATION_NEWER_OPTIONS = {
    "publish_generated_columns": (180000, "pubgencols_type"),
}
GENCOLS_CODES = {"n": "none", "s": "stored"}


class UnsupportedOption(ValueError):
    """The task asks for something the connected server does not have."""


def major_text(server_version_num):
    """150010 -> '15.10', 90624 -> '9.6.24'."""
    n = int(server_version_num)
    if n >= 100000:
        return f"{n // 10000}.{n % 10000}"
    return f"{n // 10000}.{n // 100 % 100}.{n % 100}"


def _refuse(what, option, since, server_version_num):
    raise UnsupportedOption(
        f"{what}: option {option} needs PostgreSQL {since // 10000} or later; the connected "
        f"server runs PostgreSQL {major_text(server_version_num)} "
        f"(server_version_num {server_version_num})")


# -- subscriptions -----------------------------------------------------------------------
def normalize_streaming(value):
    """The module's streaming option: a boolean, or the string ``parallel``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "parallel":
        return "parallel"
    if text in ("1", "true", "yes", "on", "y", "t"):
        return True
    if text in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ValueError(f"streaming must be true, false or parallel, got {value!r}")


def check_subscription_options(name, params, server_version_num):
    """Raise UnsupportedOption when a set option is newer than the server."""
    what = f"subscription {name!r}"
    for option, (since, _column) in SUBSCRIPTION_NEWER_OPTIONS.items():
        if params.get(option) is not None and server_version_num < since:
            _refuse(what, option, since, server_version_num)
    if params.get("streaming") == "parallel" and server_version_num < STREAMING_PARALLEL_SINCE:
        _refuse(what, "streaming=parallel", STREAMING_PARALLEL_SINCE, server_version_num)


def subscription_catalog_query(server_version_num):
    """SELECT of one subscription's state; the newer columns only where they exist."""
    extra = "".join(f", s.{column}" for since, column in SUBSCRIPTION_NEWER_OPTIONS.values()
                    if server_version_num >= since)
    return ("SELECT s.oid, s.subenabled, s.subbinary, s.substream::text AS substream,"
            " s.subdisableonerr, s.subslotname, s.subsynccommit, s.subpublications,"
            f" s.subconninfo{extra}, r.rolname AS owner FROM pg_subscription s"
            " JOIN pg_roles r ON r.oid = s.subowner"
            " WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())")


def subscription_state_from_row(row, server_version_num):
    """The newer options' values from a catalog row (only those the server has)."""
    return {option: row[column] for option, (since, column) in SUBSCRIPTION_NEWER_OPTIONS.items()
            if server_version_num >= since}


def streaming_from_catalog(text):
    """substream: boolean up to 15 ('true'/'false'), char from 16 ('f', 't', 'p')."""
    return {"t": True, "true": True, "f": False, "false": False,
            "p": "parallel"}.get(text, text)


def subscription_want(params, creating=False):
    """What the task asks for, as {option: value}.

    Unset options (``None``) are left out, so an existing subscription keeps them; a new
    one gets SUBSCRIPTION_CREATE_DEFAULTS for the basic ones (``creating``).
    """
    want = dict(SUBSCRIPTION_CREATE_DEFAULTS) if creating else {}
    want.update((k, params[k]) for k in SUBSCRIPTION_CREATE_DEFAULTS if params.get(k) is not None)
    if params.get("slot_name") is not None:
        want["slot_name"] = "NONE" if params["slot_name"].upper() == "NONE" else params["slot_name"]
    for option in SUBSCRIPTION_NEWER_OPTIONS:
        if params.get(option) is not None:
            want[option] = params[option]
    return want


def subscription_create_options(want, copy_data, create_slot):
    options = {"enabled": want["enabled"]}
    options.update((k, want[k]) for k in SUBSCRIPTION_PARAMETERS if k in want)
    options.update(copy_data=copy_data, create_slot=create_slot)
    return options


def subscription_changed_options(want, before):
    return {k: want[k] for k in SUBSCRIPTION_PARAMETERS if k in want and want[k] != before.get(k)}


def option_value(key, value):
    from psycopg import sql
    if isinstance(value, bool):
        return sql.SQL("true" if value else "false")
    if key == "slot_name" and value.upper() == "NONE":
        return sql.SQL("NONE")
    return sql.Literal(value)


def with_options(options):
    from psycopg import sql
    return sql.SQL("({})").format(sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.SQL(k), option_value(k, v)) for k, v in options.items()))


def subscription_create_sql(name, conninfo, publications, options):
    from psycopg import sql
    return sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH {}").format(
        sql.Identifier(name), sql.Literal(conninfo),
        sql.SQL(", ").join(sql.Identifier(x) for x in publications), with_options(options))


def subscription_set_sql(name, options):
    from psycopg import sql
    return sql.SQL("ALTER SUBSCRIPTION {} SET {}").format(sql.Identifier(name),
                                                          with_options(options))


# -- publications ------------------------------------------------------------------------
def check_publication_options(name, params, server_version_num):
    what = f"publication {name!r}"
    for option, (since, _column) in PUBLICATION_NEWER_OPTIONS.items():
        if params.get(option) is not None and server_version_num < since:
            _refuse(what, option, since, server_version_num)


def publication_catalog_query(server_version_num):
    extra = "".join(f", p.{column}" for since, column in PUBLICATION_NEWER_OPTIONS.values()
                    if server_version_num >= since)
    return ("SELECT p.oid, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete,"
            f" p.pubtruncate, p.pubviaroot{extra}, r.rolname AS owner FROM pg_publication p"
            " JOIN pg_roles r ON r.oid = p.pubowner WHERE p.pubname = %s")


def publication_state_from_row(row, server_version_num):
    out = {}
    if server_version_num >= PUBLICATION_NEWER_OPTIONS["publish_generated_columns"][0]:
        code = row["pubgencols_type"]
        out["publish_generated_columns"] = GENCOLS_CODES.get(code, code)
    return out


def publication_options(publish, via_root, generated_columns=None):
    """{option: value} of the WITH/SET clause; the newer ones only when set."""
    options = {"publish": ", ".join(publish), "publish_via_partition_root": bool(via_root)}
    if generated_columns is not None:
        options["publish_generated_columns"] = generated_columns
    return options


def publication_with_clause(options):
    return with_options(options)


def publication_create_sql(name, options, tables=None, all_tables=False):
    """tables: [(schema, table)]."""
    from psycopg import sql
    stmt = sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(name))
    if all_tables:
        stmt += sql.SQL(" FOR ALL TABLES")
    elif tables:
        stmt += sql.SQL(" FOR TABLE {}").format(
            sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables))
    return stmt + sql.SQL(" WITH ") + with_options(options)


def publication_set_sql(name, options):
    from psycopg import sql
    return sql.SQL("ALTER PUBLICATION {} SET ").format(sql.Identifier(name)) + with_options(options)
