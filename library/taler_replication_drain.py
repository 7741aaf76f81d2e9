#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: wait until a subscriber has confirmed the publisher's WAL."""

from __future__ import annotations

DOCUMENTATION = r"""
module: taler_replication_drain
short_description: Wait until a replication slot has confirmed everything the exchange wrote
description:
  - Connects to the publisher (the exchange primary), reads its WAL insert position once and
    waits until the named replication slot has confirmed it (C(confirmed_flush_lsn) of a logical
    slot, C(restart_lsn) of a physical one). Everything committed before the call has then reached
    the subscriber.
  - The insert position is used rather than C(pg_current_wal_lsn()), which with asynchronous
    commit can lie before the last commit and let the drain pass early.
  - Meant for the upgrade playbook's drain step, after the exchange's business logic has been
    halted; with writers still running it still returns once the position read at the start is
    confirmed.
  - Reads only, so it never reports C(changed) and runs in check mode too.
version_added: "0.2.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  slot:
    description: Name of the replication slot on the publisher (the subscription's name).
    type: str
    required: true
  timeout:
    description: Seconds to wait before failing.
    type: float
    default: 120
"""

EXAMPLES = r"""
- name: Let the ingres copy confirm everything the exchange wrote
  taler_replication_drain:
    login_host: /run/taler-ops/exchange
    login_port: 5441
    login_user: taler-exchange-db
    login_db: taler_exchange
    slot: taler_auditor_ingres
    timeout: 300
"""

RETURN = r"""
target_lsn:
  description: The publisher's WAL insert position read at the start.
  returned: success
  type: str
  sample: 0/3A2F1C8
confirmed_lsn:
  description: What the slot had confirmed when the wait ended.
  returned: always
  type: str
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import connection_argument_spec, require_psycopg
from ansible.module_utils.taler_pg_sql import Session


def _confirmed(session, slot):
    row = session.row(
        "SELECT COALESCE(confirmed_flush_lsn, restart_lsn)::text AS lsn "
        "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    if row is None:
        session.fail(f"the publisher has no replication slot {slot!r}; is the subscription there?")
    return row["lsn"]


def main():
    spec = connection_argument_spec()
    spec.update(slot=dict(type="str", required=True),
                timeout=dict(type="float", default=120.0))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    p = module.params
    session = Session(module, "exchange primary")
    started = time.monotonic()
    target = session.row("SELECT pg_current_wal_insert_lsn()::text AS lsn")["lsn"]
    while True:
        confirmed = _confirmed(session, p["slot"])
        done = confirmed is not None and session.row(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn) >= 0 AS ok",
            (confirmed, target))["ok"]
        waited = round(time.monotonic() - started, 2)
        if done:
            module.exit_json(changed=False, target_lsn=target, confirmed_lsn=confirmed,
                             waited=waited)
        if waited >= p["timeout"]:
            module.fail_json(
                msg=f"slot {p['slot']!r} confirmed only {confirmed} of {target} after "
                    f"{waited:.0f} s: is the subscription enabled and its worker running? "
                    "(taler-ops status on the auditor tells)",
                target_lsn=target, confirmed_lsn=confirmed, waited=waited)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
