#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: create, upgrade, restart or drop a Taler auditor database."""

from __future__ import annotations

DOCUMENTATION = r"""
module: taler_auditor_dbinit
short_description: Create, upgrade, restart or drop a GNU Taler auditor database
description:
  - Applies every missing C(auditor-NNNN) patch, each in its own transaction together with
    its registration in C(_v.patches), like C(taler-ops auditor-dbinit).
  - O(restart=true) clears audit progress, balances, running state and findings so that
    audits start from scratch; the merchants' deposit confirmations are kept.
  - O(state=absent) drops the auditor schema and everything in it.
version_added: "0.1.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  state:
    description: C(present) brings the schema up to date; C(absent) drops it.
    type: str
    choices: [present, absent]
    default: present
  restart:
    description:
      - Clear progress, balances and findings (dangerous; audits resume from scratch).
      - Reports C(changed) when anything was cleared.
    type: bool
    default: false
  sql_dir:
    description:
      - Directory of GNU Taler's auditor SQL files (C([auditordb-postgres] SQL_DIR)); the schema
        is then Taler's own, built as C(taler-auditor-dbinit) does (O(restart) runs Taler's
        C(restart.sql), O(state=absent) its C(drop.sql)).
    type: path
attributes:
  check_mode:
    support: full
    description: Reports the pending patches and what would be cleared or dropped, changes nothing.
  diff_mode:
    support: full
    description: Shows the list of applied patches before and after.
"""

EXAMPLES = r"""
- name: Create or upgrade the auditor schema
  taler_auditor_dbinit:
    login_host: /run/taler-ops/production
    login_port: 5443
    login_db: taler-auditor

- name: Restart all audits from scratch
  taler_auditor_dbinit:
    login_db: taler-auditor
    restart: true
"""

RETURN = r"""
applied:
  description: Patches applied by this run.
  returned: always
  type: list
  elements: str
  sample: [model-auditor-0001]
pending:
  description: Patches that were missing when the run started.
  returned: always
  type: list
  elements: str
patches_before:
  description: Auditor patches registered before the run.
  returned: always
  type: list
  elements: str
patches_after:
  description: Auditor patches registered after the run (predicted in check mode).
  returned: always
  type: list
  elements: str
restarted:
  description: Whether progress, balances and findings were cleared.
  returned: always
  type: bool
exit_code:
  description: Taler exit code of a failure (5 database not ready, 4 could not create, ...).
  returned: failure
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import (conninfo, connection_argument_spec, fail_with,
                                           require_psycopg)


def main():
    spec = connection_argument_spec()
    spec.update(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        restart=dict(type="bool", default=False),
        sql_dir=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    from ansible.module_utils.taler_ops.schema import auditor_schema, dbinit
    from ansible.module_utils.taler_ops.errors import TalerOpsError

    p = module.params
    uri = conninfo(module)
    try:
        if module.check_mode:
            result = dbinit.auditor_dbinit(uri, check=True, sql_dir=p["sql_dir"])
            has_data = dbinit.auditor_has_audit_state(uri)
            if p["state"] == "absent":
                result["patches_after"] = []
                result["changed"] = bool(result["patches_before"]) or has_data is not None
            else:
                result["patches_after"] = (
                    sorted(set(result["patches_before"]) | set(result["pending"]))
                    if result.get("flavour") == "taler" else [x.name for x in auditor_schema.PATCHES])
                result["restarted"] = bool(p["restart"] and has_data)
                result["changed"] = bool(result["pending"] or result["restarted"])
        elif p["state"] == "absent":
            result = dbinit.auditor_dbinit(uri, drop=True, recreate=False, sql_dir=p["sql_dir"])
            result["changed"] = result["dropped"]
        else:
            restart = p["restart"] and bool(dbinit.auditor_has_audit_state(uri))
            result = dbinit.auditor_dbinit(uri, restart=restart, sql_dir=p["sql_dir"])
            result["changed"] = bool(result["applied"] or result["restarted"])
    except TalerOpsError as exc:
        fail_with(module, exc)
    if module._diff:
        result["diff"] = {"before": {"patches": result["patches_before"]},
                          "after": {"patches": result["patches_after"]}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
