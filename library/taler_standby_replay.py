#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: wait until a hot standby has replayed the primary's WAL up to a position."""

from __future__ import annotations

DOCUMENTATION = r"""
module: taler_standby_replay
short_description: Wait until a streaming standby has replayed the WAL up to a position
description:
  - Connects to a hot standby (the streaming ingres copy) and waits until
    C(pg_last_wal_replay_lsn()) has reached O(lsn), a position of its primary's WAL.
  - A physical slot confirming a position (M(taler_replication_drain)) means the standby has
    received and flushed that WAL, not that it has replayed it; what a reader of the standby
    (the sync) sees is what was replayed, so the upgrade playbook's drain step waits for this too.
  - A standby reports its replay progress to no client, so the module polls every 0.2 s.
  - Refuses a server that is not in recovery (a primary, or a promoted standby), which replays
    nothing, so the wait could only time out.
  - On timeout the task fails naming the target and the replayed position, and says so when
    the standby's replay is paused.
  - Reads only, so it never reports C(changed) and runs in check mode too.
version_added: "0.2.0"
author: taler-ops developers
extends_documentation_fragment: taler_pg
options:
  lsn:
    description:
      - The primary's WAL position to wait for, in C(pg_lsn)'s text form, e.g. the
        C(target_lsn) that M(taler_replication_drain) returns.
    type: str
    required: true
  timeout:
    description: Seconds to wait before failing.
    type: float
    default: 120
"""

EXAMPLES = r"""
- name: Let the exchange's primary confirm everything through the standby's slot
  taler_replication_drain:
    login_host: /run/taler-ops/exchange
    login_port: 5441
    login_user: taler-exchange-db
    login_db: taler_exchange
    slot: taler_auditor_ingres
  register: drained

- name: Wait until the streaming ingres copy has replayed it
  taler_standby_replay:
    login_host: /run/taler-ops/ingres
    login_port: 5442
    login_user: postgres
    login_db: taler_exchange
    lsn: "{{ drained.target_lsn }}"
    timeout: 300
"""

RETURN = r"""
target_lsn:
  description: The position waited for (O(lsn)).
  returned: always
  type: str
  sample: 0/3A2F1C8
replayed_lsn:
  description: The standby's C(pg_last_wal_replay_lsn()) when the wait ended.
  returned: when the server is a standby
  type: str
received_lsn:
  description: The standby's C(pg_last_wal_receive_lsn()) when the wait ended (streamed and flushed).
  returned: when the server is a standby
  type: str
paused:
  description: Whether the standby's WAL replay was paused when the wait ended.
  returned: when the server is a standby
  type: bool
waited:
  description: Seconds spent waiting.
  returned: when the server is a standby
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import conninfo, connection_argument_spec, fail_with, require_psycopg


def main():
    spec = connection_argument_spec()
    spec.update(lsn=dict(type="str", required=True),
                timeout=dict(type="float", default=120.0))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_psycopg(module)
    import psycopg
    from ansible.module_utils.taler_pg_sql import error_text
    from ansible.module_utils.taler_ops.db import connect
    from ansible.module_utils.taler_ops.errors import TalerOpsError
    from ansible.module_utils.taler_ops.ingres import replication

    lsn = module.params["lsn"]
    try:
        with connect(conninfo(module), "ingres standby", autocommit=True) as conn:
            position, waited = replication.wait_replayed(conn, lsn, module.params["timeout"])
    except replication.NotReplayed as exc:
        fail_with(module, exc, changed=False, waited=exc.waited, **_shown(exc.position))
    except TalerOpsError as exc:
        fail_with(module, exc, changed=False, target_lsn=lsn)
    except psycopg.Error as exc:
        module.fail_json(msg=f"reading the standby's replay position failed: {error_text(exc)}",
                         changed=False, target_lsn=lsn)
    module.exit_json(changed=False, waited=waited, **_shown(position))


def _shown(position):
    return {key: position[key]
            for key in ("target_lsn", "replayed_lsn", "received_lsn", "paused")}


if __name__ == "__main__":
    main()
