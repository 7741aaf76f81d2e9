# -*- coding: utf-8 -*-
"""What the taler-ops PostgreSQL modules (pg_role, pg_privileges, pg_publication,
pg_subscription, pg_setting, pg_database) share: one session that runs or, in
check mode, only records statements; identifier parsing; SCRAM verifiers.

Secrets never enter ``queries``: a statement that carries one is recorded in a
second, masked form built by the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata

MASK = "********"


class Session:
    """A module's database connection (autocommit) plus the list of statements it ran.

    Reads always run, also in check mode; ``execute`` only records in check mode.
    """

    def __init__(self, module, what="database", autocommit=True):
        from ansible.module_utils.taler_pg import conninfo, fail_with
        from ansible.module_utils.taler_ops.db import connect
        from ansible.module_utils.taler_ops.errors import TalerOpsError
        from psycopg.rows import dict_row

        self.module = module
        self.queries = []
        self.check_mode = module.check_mode
        try:
            self.conn = connect(conninfo(module), what, autocommit=autocommit, row_factory=dict_row)
        except TalerOpsError as exc:
            fail_with(module, exc, changed=False)
        self.server_version = self.conn.info.server_version

    def keep_statements_out_of_server_log(self):
        """Stop this session's statements (which may carry a secret) from reaching the server log.

        Only a superuser may change these settings; for others the server's own settings stay.
        """
        import psycopg
        for setting, value in (("log_statement", "none"), ("log_min_error_statement", "panic"),
                               ("log_min_duration_statement", "-1")):
            try:
                self.conn.execute(f"SET {setting} = '{value}'")
            except psycopg.errors.InsufficientPrivilege:
                pass

    def rows(self, query, params=None):
        import psycopg
        try:
            return self.conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            self.fail(f"reading the catalog failed: {error_text(exc)}", exc)

    def row(self, query, params=None):
        found = self.rows(query, params)
        return found[0] if found else None

    def execute(self, stmt, shown=None):
        """Run ``stmt`` (a psycopg.sql.Composable) unless in check mode.

        ``shown`` is the form recorded in ``queries`` when ``stmt`` holds a secret.
        """
        import psycopg
        self.queries.append((shown if shown is not None else stmt).as_string(self.conn))
        if self.check_mode:
            return
        try:
            self.conn.execute(stmt)
        except psycopg.Error as exc:
            self.fail(f"{self.queries[-1]} failed: {error_text(exc)}", exc)

    def missing(self, msg):
        """A prerequisite is missing: fail, except in check mode, where an earlier task that
        would have created it did not run - there it is a warning and the run goes on."""
        if self.check_mode:
            self.module.warn(msg + " (check mode: assuming an earlier task creates it)")
        else:
            self.fail(msg)

    def fail(self, msg, exc=None, **extra):
        if exc is not None and getattr(exc, "sqlstate", None):
            extra["sqlstate"] = exc.sqlstate
        self.module.fail_json(msg=msg, changed=False, queries=self.queries, **extra)

    def close(self):
        self.conn.close()


def error_text(exc):
    """The server's message and hint, without the statement text psycopg may append."""
    diag = getattr(exc, "diag", None)
    if diag is not None and diag.message_primary:
        text = diag.message_primary
        if diag.message_detail:
            text += f" ({diag.message_detail})"
        if diag.message_hint:
            text += f" Hint: {diag.message_hint}"
        return text
    return " ".join(str(exc).split())


def parse_qualified(name, default_schema="public"):
    """``schema.table`` -> (schema, table) with SQL's rules: unquoted parts fold to
    lower case, double-quoted parts keep case and may contain dots (``""`` escapes ``"``).

    Raises ValueError for anything that is not one or two identifiers.
    """
    parts, i, n = [], 0, len(name)
    while True:
        if i < n and name[i] == '"':
            j, buf = i + 1, []
            while True:
                k = name.find('"', j)
                if k < 0:
                    raise ValueError(f"unterminated quoted identifier in {name!r}")
                buf.append(name[j:k])
                if name[k + 1:k + 2] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append("".join(buf))
        else:
            k = name.find(".", i)
            k = n if k < 0 else k
            part = name[i:k].strip()
            if not part or '"' in part:
                raise ValueError(f"malformed name {name!r}")
            parts.append(part.lower())
            i = k
        if i == n:
            break
        if name[i] != ".":
            raise ValueError(f"malformed name {name!r}")
        i += 1
    if len(parts) == 1:
        return default_schema, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise ValueError(f"{name!r} is not a [schema.]name")


def qualified_text(schema, name):
    """Canonical display form of a schema-qualified name (quoted only where needed)."""
    return f"{_quote_if_needed(schema)}.{_quote_if_needed(name)}"


def _quote_if_needed(ident):
    plain = ident and (ident[0].isalpha() or ident[0] == "_") and ident == ident.lower() and all(
        ch.isalnum() or ch in "_$" for ch in ident) and ident.isascii()
    return ident if plain else '"' + ident.replace('"', '""') + '"'


# --- SCRAM-SHA-256 (RFC 5802 / 7677), to compare a password with a stored verifier ---

def saslprep(password):
    """RFC 4013 SASLprep as PostgreSQL applies it (pure ASCII and prohibited input pass unchanged)."""
    if password.isascii():
        return password
    chars = []
    for ch in password:
        if stringprep.in_table_b1(ch):
            continue
        chars.append(" " if stringprep.in_table_c12(ch) else ch)
    text = unicodedata.ucd_3_2_0.normalize("NFKC", "".join(chars))
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
                  stringprep.in_table_a1)
    if any(check(ch) for ch in text for check in prohibited):
        return password
    if any(stringprep.in_table_d1(ch) for ch in text):
        if any(stringprep.in_table_d2(ch) for ch in text) or not (
                stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            return password
    return text


def scram_matches(password, verifier):
    """True if ``verifier`` (pg_authid.rolpassword) is a SCRAM-SHA-256 secret of ``password``.

    The stored salt and iteration count are reused, so an unchanged password is
    recognised without knowing how the verifier was made.
    """
    try:
        method, rest = verifier.split("$", 1)
        iter_salt, keys = rest.split("$", 1)
        iterations, salt = iter_salt.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        if method != "SCRAM-SHA-256":
            return False
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"),
                                     base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    ours_stored = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    ours_server = base64.b64encode(hmac.new(salted, b"Server Key", hashlib.sha256).digest()).decode()
    return hmac.compare_digest(ours_stored, stored_key) and hmac.compare_digest(ours_server, server_key)
