#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: one safe sync from the ingres copy to the auditor's safe copy."""

from __future__ import annotations

DOCUMENTATION = r"""
module: taler_auditor_sync
short_description: Copy new, valid records from a Taler ingres database to the auditor's safe copy
description:
  - Runs the taler-ops safe sync to completion, like C(taler-ops sync -t) (the equivalent of
    C(taler-auditor-sync -t)) - passes over one consistent snapshot of the source each until
    a pass copies nothing.
  - Only the registry's immutable columns of the replicated exchange tables are copied, in
    batches of O(batch_size) rows, each committed together with the table's watermark in
    C(taler_ops.sync_watermarks). Every rule is checked by the safe copy's server (derived
    hashes recomputed there); mutable columns keep the safe copy's defaults. UPDATEs and
    DELETEs upstream are never propagated.
  - Serials missing below a watermark (rows committed out of serial order, or burned) are
    recorded as holes in C(taler_ops.sync_holes) and searched again by every later run, so
    a row committed late is never stepped over; C(open_holes) reports how many remain.
  - Any invariant violation (missing parent, duplicate key under a new serial, NULL, wrong
    length, bad amount, forged derived hash, a row in an expired hole (late-row), a source
    that could hide rows, schema drift) fails
    the task with one
    C(HALT table=... serial=... rule=...) message; nothing of the offending batch is
    written, earlier batches stay, and the halt is recorded in C(taler_ops.sync_halts).
    Once the ingres copy is repaired the next run resumes.
  - The destination must have been created with role C(safe-copy); a source that is itself
    a safe copy is refused. Both must be at the current exchange patch level.
version_added: "0.1.0"
author: taler-ops developers
options:
  src_config:
    description:
      - Taler-style configuration file of the source (ingres) database on the managed host;
        its C([exchangedb-postgres] CONFIG) is the libpq connection string.
    type: path
    required: true
  dst_config:
    description:
      - Taler-style configuration file of the destination (safe copy) database on the managed
        host, with C([exchangedb-postgres] CONFIG). Must differ from O(src_config).
    type: path
    required: true
  batch_size:
    description: Rows per destination transaction.
    type: int
    default: 20000
  hole_horizon:
    description:
      - Seconds of the source's replication clock after which a hole expires (a row
        appearing there later halts with rule C(late-row)); see C(docs/sync.md).
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    description:
      - One pass that copies and checks everything inside a destination transaction that
        is rolled back, and reports per table how many rows would be copied.
  diff_mode:
    support: none
    description: Not supported.
notes:
  - Another sync holding the destination (the sync service) makes the task fail; stop the
    service first or let it do the work.
  - The destination role needs INSERT on the exchange tables, SELECT, INSERT and UPDATE on
    C(taler_ops.sync_watermarks) and C(taler_ops.sync_halts), SELECT, INSERT, UPDATE and
    DELETE on C(taler_ops.sync_holes) and C(taler_ops.sync_cuts), and TEMPORARY on the database
    (used only to diagnose a violation); the source role needs only SELECT.
  - If the destination role may C(SET session_replication_role) (PostgreSQL 15
    C(GRANT SET ON PARAMETER session_replication_role)), the per-row FK triggers are skipped
    and the sync checks parents itself, one set-based query per batch (about twice as fast).
  - See C(docs/sync.md) for the rules, exit codes and known limits.
requirements:
  - psycopg >= 3.1 on the managed host
"""

EXAMPLES = r"""
- name: Bring the auditor's safe copy up to date
  taler_auditor_sync:
    src_config: /etc/taler-ops/sync/ingres.conf
    dst_config: /etc/taler-ops/sync/safe-copy.conf
  become: true
  become_user: taler-ops-sync

- name: Show what a sync would copy
  taler_auditor_sync:
    src_config: /etc/taler-ops/sync/ingres.conf
    dst_config: /etc/taler-ops/sync/safe-copy.conf
    batch_size: 5000
  check_mode: true
  register: pending

- name: Report the backlog
  ansible.builtin.debug:
    msg: "{{ pending.copied }} rows would be copied"
"""

RETURN = r"""
copied:
  description: Rows copied by this run (would be copied, in check mode).
  returned: always
  type: int
  sample: 1520
passes:
  description: Passes made (each over one source snapshot).
  returned: always
  type: int
  sample: 2
tables:
  description:
    - Per replicated table, the rows copied (would be copied in check mode), the watermark
      after the run (the last copied serial) and the largest serial in the source snapshot.
  returned: always
  type: dict
  sample: {reserves: {copied: 12, watermark: 4711, source_max: 4711}}
open_holes:
  description: Holes still open after the run (searched again by the next run or the service).
  returned: success
  type: int
  sample: 0
warnings_found:
  description: Unexpected extra columns on either side (they are not copied).
  returned: always
  type: list
  elements: str
halt:
  description: The invariant violation that stopped the run.
  returned: failure by an invariant violation
  type: dict
  sample: {table: coin_deposits, serial: 46, rule: parent-missing,
           detail: "coin_deposits (batch_deposit_serial_id) = (999999) has no row in batch_deposits(batch_deposit_serial_id)",
           message: "HALT table=coin_deposits serial=46 rule=parent-missing ..."}
exit_code:
  description: Taler exit code of a failure (1 halt or lock held, 5 database not ready, 6 configuration).
  returned: failure
  type: int
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src_config=dict(type="path", required=True),
            dst_config=dict(type="path", required=True),
            batch_size=dict(type="int", default=20000),
            hole_horizon=dict(type="float", default=60.0),
        ),
        supports_check_mode=True,
    )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib("psycopg (psycopg[binary] >= 3.1)"))
    from ansible.module_utils.taler_ops import config, sync
    from ansible.module_utils.taler_ops.errors import TalerOpsError

    p = module.params
    try:
        if p["batch_size"] < 1:
            module.fail_json(msg="batch_size must be at least 1", exit_code=2)
        import os
        if os.path.realpath(p["src_config"]) == os.path.realpath(p["dst_config"]):
            module.fail_json(msg="src_config and dst_config must differ", exit_code=2)
        src_uri = config.exchangedb_uri(config.load(p["src_config"], project="taler-auditor"))
        dst_uri = config.exchangedb_uri(config.load(p["dst_config"], project="taler-auditor"))
        result = sync.sync_once(src_uri, dst_uri, batch_size=p["batch_size"],
                                dry_run=module.check_mode, hole_horizon=p["hole_horizon"])
    except sync.SyncHalt as halt:
        module.fail_json(msg=str(halt), halt=halt.as_dict(), exit_code=halt.exit_code)
    except TalerOpsError as exc:
        module.fail_json(msg=str(exc), exit_code=exc.exit_code)
    module.exit_json(changed=result["copied"] > 0, copied=result["copied"],
                     passes=result["passes"], tables=result["tables"],
                     open_holes=result["open_holes"],
                     warnings_found=result["warnings"])


if __name__ == "__main__":
    main()
