#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: create, upgrade, reset or garbage-collect a Taler exchange database."""

from __future__ import annotations

DOCUMENTATION = r"""
module: taler_exchange_dbinit
short_description: Create, upgrade, reset or garbage-collect a GNU Taler exchange database
description:
  - Applies every missing C(exchange-NNNN) patch to the database, each in its own transaction
    together with its registration in C(_v.patches), like C(taler-ops exchange-dbinit).
  - Concurrent runs against the same database are serialised; each patch is applied once.
  - The database's role (primary, ingres or safe-copy) and partitioning are recorded at
    creation and fixed afterwards; a request to change them fails instead of being ignored.
  - Garbage collection follows Taler's rules; on a safe copy the reserve rule uses the
    balance derived from the append-only history, since the exchange's mutable
    C(current_balance) is never replicated there. GC is refused on an ingres copy.
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  state:
    description:
      - C(present) brings the schema up to date.
      - C(absent) drops the exchange schema with all its data and unregisters its patches.
    type: str
    choices: [present, absent]
    default: present
  reset:
    description:
      - Drop the exchange schema (all data) before creating it again. Dangerous.
      - Always reports C(changed).
    type: bool
    default: false
  gc:
    description: Garbage-collect old data after bringing the schema up to date.
    type: bool
    default: false
  partitions:
    description:
      - Hash-partition the large tables into this many partitions (0 means one default
        partition); partitioned databases have no foreign keys.
      - Only used when the schema is created; must match on later runs.
    type: int
  sql_dir:
    description:
      - Directory of GNU Taler's exchange SQL files (Taler's C([exchangedb-postgres] SQL_DIR),
        e.g. C(/usr/share/taler-exchange/sql/)). The schema is then built and migrated from
        those files exactly as C(taler-exchange-dbinit) does, and taler-ops adds only its own
        bookkeeping schema C(taler_ops).
      - Unset, a database that Taler built is adopted as it is and a new one gets taler-ops'
        built-in model.
    type: path
  role:
    description:
      - What this database is. Recorded at creation (default C(primary)); must match later.
      - An C(ingres) copy gets no foreign keys (replication apply does not check them anyway).
    type: str
    choices: [primary, ingres, safe-copy]
attributes:
  check_mode:
    support: full
    description: Reports the pending patches (and, with O(gc), what GC would delete) without changing anything.
  diff_mode:
    support: full
    description: Shows the list of applied patches before and after.
notes:
  - Connect as a role that may create schemas in the database (normally its owner).
"""

EXAMPLES = r"""
- name: Create or upgrade the exchange schema on the auditor's safe copy
  taler_exchange_dbinit:
    login_host: /run/taler-ops/production
    login_port: 5443
    login_db: taler-exchange
    role: safe-copy

- name: Garbage-collect the exchange primary
  taler_exchange_dbinit:
    login_host: db.exchange.example
    login_user: taler-exchange
    login_password: "{{ vault_exchange_db_password }}"
    login_db: taler-exchange
    ssl_mode: verify-full
    ssl_rootcert: /etc/taler-ops/ca.crt
    gc: true
"""

RETURN = r"""
applied:
  description: Patches applied by this run.
  returned: always
  type: list
  elements: str
  sample: [model-exchange-0001]
pending:
  description: Patches that were missing when the run started.
  returned: always
  type: list
  elements: str
patches_before:
  description: Exchange patches registered before the run.
  returned: always
  type: list
  elements: str
patches_after:
  description: Exchange patches registered after the run (predicted in check mode).
  returned: always
  type: list
  elements: str
not_copied:
  description:
    - On a database built from Taler's files, what the patches applied by this run added that
      taler-ops' registry does not copy into the safe copy, for a Taler release newer than
      taler-ops (docs/upgrade.md); empty on a first build and on the built-in model.
  returned: when the database is built from Taler's SQL files
  type: dict
  sample: {tables: [wire_notes], columns: [reserves_in.origin_note]}
setup:
  description: Role, partitioning and foreign keys of the database (null before creation).
  returned: always
  type: dict
  sample: {role: safe-copy, partitions: null, foreign_keys: true}
gc:
  description: Rows deleted per table by garbage collection (would be deleted, in check mode).
  returned: when O(gc=true)
  type: dict
  sample: {role: primary, now: 1795774988863298, deleted: {reserves: 12, reserves_in: 12}}
exit_code:
  description: Taler exit code of a failure (5 database not ready, 4 could not create, ...).
  returned: failure
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import (conninfo, connection_argument_spec, fail_with,
                                           require_psycopg)


def _check_mode(module, uri, engine):
    p = module.params
    result = engine["dbinit"].exchange_dbinit(uri, check=True, partitions=p["partitions"],
                                              role=p["role"], sql_dir=p["sql_dir"])
    before = result["patches_before"]
    if p["state"] == "absent":
        result.update(patches_after=[], changed=bool(before) or result["setup"] is not None)
        return result
    if result.get("flavour") == "taler":
        names = sorted(set(before) | set(result["pending"]))
    else:
        names = [x.name for x in engine["exchange_schema"].PATCHES]
    result["patches_after"] = names
    result["changed"] = bool(p["reset"] or result["pending"])
    if p["gc"] and not result["pending"] and not p["reset"]:
        conn = engine["db"].connect(uri, "exchange database", autocommit=True)
        try:
            result["gc"] = engine["gc"].collect(conn, dry_run=True)
        finally:
            conn.close()
        result["changed"] = result["changed"] or bool(result["gc"]["deleted"])
    return result


def main():
    spec = connection_argument_spec()
    spec.update(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        reset=dict(type="bool", default=False),
        gc=dict(type="bool", default=False),
        partitions=dict(type="int"),
        role=dict(type="str", choices=["primary", "ingres", "safe-copy"]),
        sql_dir=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[("reset", "gc")])
    require_psycopg(module)
    from ansible.module_utils.taler_ops import db
    from ansible.module_utils.taler_ops.schema import dbinit, exchange_schema, gc
    from ansible.module_utils.taler_ops.errors import TalerOpsError
    engine = {"db": db, "dbinit": dbinit, "exchange_schema": exchange_schema, "gc": gc}

    p = module.params
    uri = conninfo(module)
    try:
        if module.check_mode:
            result = _check_mode(module, uri, engine)
        elif p["state"] == "absent":
            result = dbinit.exchange_drop(uri)
            result["changed"] = result["dropped"]
        else:
            result = dbinit.exchange_dbinit(uri, reset=p["reset"], run_gc=p["gc"],
                                            partitions=p["partitions"], role=p["role"],
                                            sql_dir=p["sql_dir"])
            deleted = (result.get("gc") or {}).get("deleted")
            result["changed"] = bool(result["applied"] or result["reset"] or deleted)
    except TalerOpsError as exc:
        fail_with(module, exc)
    if module._diff:
        result["diff"] = {"before": {"patches": result["patches_before"]},
                          "after": {"patches": result["patches_after"]}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
