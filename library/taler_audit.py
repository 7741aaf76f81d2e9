#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: one incremental audit run of an exchange database."""

from __future__ import annotations

DOCUMENTATION = r"""
module: taler_audit
short_description: Run the taler-ops audit once (like C(taler-ops audit -t))
description:
  - Runs every audit check (reserves, coins, aggregation) once over the rows added since the
    last run, and stores findings, running balances and progress in the auditor database,
    each check in one transaction.
  - O(internal=true) adds the internal-audit comparisons against the exchange's mutable
    summaries (reserve balances, coins' remaining value, deposits' done flag). They are only
    valid on the exchange primary; the module fails (exit code 2) against a safe copy.
  - Findings are results, not failures; the task fails only when the audit itself fails.
version_added: "0.1.0"
author: taler-ops developers
options:
  config:
    description:
      - Taler configuration file on the managed host. C([exchangedb-postgres] CONFIG) names the
        exchange database to read, C([auditordb-postgres] CONFIG) the auditor database to
        write; C([exchange] CURRENCY), if set, formats the amounts; with C([exchange]
        MASTER_PUBLIC_KEY) (and C(BASE_URL) where purses exist) every signature is verified,
        without it the signatures check is skipped with a warning.
    type: path
    required: true
  internal:
    description: Also run the internal-audit checks (exchange primary only).
    type: bool
    default: false
  report:
    description: Also write the full JSON report to this file on the managed host.
    type: path
  settle:
    description:
      - On a live primary, audit only rows whose serial was handed out this many seconds
        before the run's snapshot, so a transaction still in flight cannot later commit a row
        below the progress points (serials are handed out before commit). Choose more than
        the exchange's longest transaction. A safe copy is always cut at the last complete
        sync pass instead.
    type: float
    default: 0
  max_findings:
    description: At most this many of the run's new findings are returned in RV(report).
    type: int
    default: 100
attributes:
  check_mode:
    support: full
    description: Runs the checks and rolls the auditor transaction back; nothing is stored.
  diff_mode:
    support: none
notes:
  - The connection strings may hold passwords; they are never returned, only host, port,
    database and user.
requirements:
  - psycopg >= 3.1 on the managed host
"""

EXAMPLES = r"""
- name: Internal audit of the exchange primary
  taler_audit:
    config: /etc/taler-ops/internal-audit.conf
    internal: true
  register: audit

- name: Audit the safe copy and keep the report
  taler_audit:
    config: /etc/taler-ops/auditor.conf
    report: /var/lib/taler-ops/audit-report.json
"""

RETURN = r"""
changed:
  description: Whether any progress point moved or a finding was stored.
  returned: always
  type: bool
new_findings:
  description: Number of findings stored by this run.
  returned: always
  type: int
new_findings_by_kind:
  description: Findings stored by this run, counted per kind.
  returned: always
  type: dict
  sample: {coin_overspent: 1}
open_findings_by_kind:
  description: Unsuppressed findings in the auditor database (all runs), per kind.
  returned: always
  type: dict
balances:
  description: The auditor's running balances after the run.
  returned: always
  type: dict
  sample: {coins_total_escrowed: "KUDOS:12.5"}
summary:
  description: The short human summary of the run, one line per element.
  returned: always
  type: list
  elements: str
report:
  description: The run's report (as C(taler-ops audit --report)), findings capped at O(max_findings).
  returned: always
  type: dict
exit_code:
  description: Taler exit code of a failure (2 internal audit of a safe copy, 5 database not ready).
  returned: failure
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg import fail_with, require_psycopg


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="path", required=True),
            internal=dict(type="bool", default=False),
            report=dict(type="path"),
            settle=dict(type="float", default=0.0),
            max_findings=dict(type="int", default=100),
        ),
        supports_check_mode=True,
    )
    require_psycopg(module)
    import psycopg
    from ansible.module_utils.taler_ops import audit, config
    from ansible.module_utils.taler_ops.errors import TalerOpsError

    p = module.params
    try:
        cfg = config.load(p["config"], project="taler-auditor")
        currency = cfg.get_string("exchange", "CURRENCY", required=False) or None
        signatures = audit.signature_context(cfg)
        if signatures is None:
            module.warn("signatures check skipped: [exchange] MASTER_PUBLIC_KEY is not set in "
                        + cfg.describe())
        auditor_pub = audit.auditor_public_key(cfg)
        if auditor_pub is None:
            module.warn("denominations without auditor signatures not checked: [auditor] "
                        "PUBLIC_KEY is not set in " + cfg.describe())
        try:
            report = audit.run(config.exchangedb_uri(cfg), config.auditordb_uri(cfg),
                               internal=p["internal"], currency=currency,
                               dry_run=module.check_mode, settle=p["settle"],
                               signatures=signatures, auditor_pub=auditor_pub)
        except psycopg.Error as exc:
            raise audit.database_error(exc) from None
    except TalerOpsError as exc:
        fail_with(module, exc)
    if p["report"] and not module.check_mode:
        import json
        import os
        import tempfile
        directory = os.path.dirname(p["report"]) or "."
        fd, tmp = tempfile.mkstemp(prefix=".audit-report-", dir=directory)
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=2, sort_keys=True)
        module.atomic_move(tmp, p["report"])
    findings = report["findings"]
    shown = dict(report, findings=findings[:max(p["max_findings"], 0)],
                 findings_truncated=len(findings) > max(p["max_findings"], 0))
    module.exit_json(changed=bool(report["progress_moved"] or findings),
                     new_findings=len(findings),
                     new_findings_by_kind=report["new_findings_by_kind"],
                     open_findings_by_kind=report["open_findings_by_kind"],
                     balances=report["balances"], report=shown,
                     summary=audit.summary(report).splitlines())


if __name__ == "__main__":
    main()
