#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: one server setting through ALTER SYSTEM."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_setting
short_description: Set or reset a PostgreSQL server setting with ALTER SYSTEM
description:
  - Writes the setting into C(postgresql.auto.conf) with C(ALTER SYSTEM SET), or removes it
    with C(ALTER SYSTEM RESET), and reloads the configuration.
  - C(changed) is true only when the configured value differs from O(value), compared in the
    setting's own terms (C(10GB) equals C(10240MB), C(on) equals C(true)).
  - The configured value is the one in C(postgresql.auto.conf), or, when that file does not set
    it, the value the server runs with.
  - Meant for an existing server the deployment does not template (on the exchange primary
    C(wal_level), C(max_slot_wal_keep_size)).
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  name:
    description: Name of the setting (must be known to the server).
    type: str
    required: true
  value:
    description:
      - New value, as in C(postgresql.conf). A list gives a list-valued setting
        (C(shared_preload_libraries)) several elements.
      - Required with O(state=present).
    type: raw
  state:
    description: C(present) sets the value; C(absent) removes it from C(postgresql.auto.conf).
    type: str
    choices: [present, absent]
    default: present
  reload:
    description: Call C(pg_reload_conf()) after a change, so settings that need no restart take effect.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Reports whether the value would change, without writing it.
  diff_mode:
    support: full
    description: Shows the configured value before and after.
notes:
  - C(ALTER SYSTEM) needs a superuser login.
"""

EXAMPLES = r"""
- name: Logical decoding on the exchange primary
  pg_setting:
    login_host: /var/run/postgresql
    login_db: postgres
    name: wal_level
    value: logical
  register: wal_level

- name: Restart when needed
  ansible.builtin.command: pg_ctlcluster 15 main restart
  when: wal_level.restart_required
"""

RETURN = r"""
name:
  description: Name of the setting.
  returned: always
  type: str
value:
  description: The configured value after the run (as written, or the running value when not in postgresql.auto.conf).
  returned: always
  type: str
previous:
  description: The configured value before the run.
  returned: always
  type: str
running:
  description: The value the server runs with now, with its unit (C(pg_settings.setting) and C(unit)).
  returned: always
  type: str
  sample: 16384 (8kB)
context:
  description: C(pg_settings.context) of the setting (C(postmaster) means restart-only).
  returned: always
  type: str
restart_required:
  description:
    - True if the setting is restart-only and the running value differs from the configured
      one, whether this run or an earlier one changed it.
  returned: always
  type: bool
pending_restart:
  description: C(pg_settings.pending_restart) as the server reports it after the reload.
  returned: always
  type: bool
queries:
  description: Statements run (would run, in check mode).
  returned: always
  type: list
  elements: str
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import connection_argument_spec, require_psycopg
from ansible.module_utils.taler_pg_sql import Session

MEMORY = {"B": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}
BOOLS = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False,
         "no": False, "0": False}


def normalise(value, setting):
    """A comparable form of ``value`` for the pg_settings row ``setting``."""
    if value is None:
        return None
    text = value.strip()
    vartype, unit = setting["vartype"], setting["unit"]
    if vartype == "bool":
        return BOOLS.get(text.lower(), text.lower())
    if vartype in ("integer", "real"):
        match = re.fullmatch(r"(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)", text)
        if not match:
            return text
        number, suffix = float(match.group(1)), match.group(2)
        if not unit or number == -1 and not suffix:
            return number
        base_match = re.fullmatch(r"([0-9]*)\s*([a-zA-Z]+)", unit)
        base_count = int(base_match.group(1) or 1)
        base_unit = base_match.group(2)
        table = MEMORY if base_unit in MEMORY else TIME
        if not suffix:
            return number
        if suffix not in table:
            return text
        return number * table[suffix] / (table[base_unit] * base_count)
    if vartype == "enum":
        return text.lower()
    return text


def auto_conf_value(session, name):
    row = session.row(
        "SELECT setting FROM pg_file_settings WHERE name = %s"
        " AND sourcefile LIKE '%%/postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1", (name,))
    return row["setting"] if row else None


def configured_elsewhere(session, setting):
    """The value the other configuration files (or the built-in default) give the setting."""
    row = session.row(
        "SELECT setting FROM pg_file_settings WHERE name = %s"
        " AND sourcefile NOT LIKE '%%/postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1",
        (setting["name"],))
    return row["setting"] if row else setting["boot_val"]


def value_text(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def main():
    spec = connection_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        value=dict(type="raw"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        reload=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_if=[("state", "present", ("value",))])
    require_psycopg(module)
    from psycopg import sql

    p = module.params
    name = p["name"].lower()
    session = Session(module, "database")
    setting = session.row(
        "SELECT name, setting, unit, vartype, context, pending_restart, enumvals, boot_val"
        " FROM pg_settings WHERE name = %s", (name,))
    if setting is None:
        session.fail(f"unknown setting {p['name']!r}")
    if setting["context"] == "internal":
        session.fail(f"setting {name!r} is fixed when PostgreSQL is built or initialised")

    def running():
        return f"{setting['setting']}" + (f" ({setting['unit']})" if setting["unit"] else "")

    in_auto = auto_conf_value(session, name)
    previous = in_auto if in_auto is not None else setting["setting"]
    value = previous
    if p["state"] == "present":
        text = value_text(p["value"])
        if setting["vartype"] == "enum" and setting["enumvals"] and \
                text.lower() not in [v.lower() for v in setting["enumvals"]]:
            session.fail(f"invalid value {text!r} for setting {name!r}; expected one of "
                         + ", ".join(setting["enumvals"]))
        if normalise(text, setting) != normalise(previous, setting):
            if isinstance(p["value"], (list, tuple)):
                values = sql.SQL(", ").join(sql.Literal(str(v)) for v in p["value"])
            else:
                values = sql.Literal(text)
            session.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), values))
            value = text
    elif in_auto is not None:
        session.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
        value = configured_elsewhere(session, setting)

    if session.queries and p["reload"]:
        session.execute(sql.SQL("SELECT pg_reload_conf()"))
    pending = setting["pending_restart"]
    if session.queries and not session.check_mode:
        refreshed = session.row("SELECT pending_restart FROM pg_settings WHERE name = %s", (name,))
        pending = refreshed["pending_restart"]
    restart_required = setting["context"] == "postmaster" and \
        normalise(value, setting) != normalise(setting["setting"], setting)

    result = dict(changed=bool(session.queries), name=name, value=value, previous=previous,
                  running=running(), context=setting["context"],
                  restart_required=restart_required, pending_restart=pending,
                  queries=session.queries)
    if module._diff:
        result["diff"] = dict(before=f"{name} = {previous}\n", after=f"{name} = {value}\n")
    session.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
