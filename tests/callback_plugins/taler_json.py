# -*- coding: utf-8 -*-
"""Test-only stdout callback: every task result of the run as one JSON document.

ansible-core 2.19 no longer ships the ``json`` callback (it lives in ansible.posix,
which Galaxy cannot deliver here), so the module tests bring this small one.
"""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: taler_json
type: stdout
short_description: Task results as one JSON document (tests only)
description: Prints one JSON object whose C(results) list holds task, host, status and result of every task.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "taler_json"

    def __init__(self):
        super().__init__()
        self.results = []

    def _record(self, result, status):
        data = dict(result._result)
        data.pop("_ansible_no_log", None)
        if status == "failed":
            data["failed"] = True  # ignore_errors would otherwise hide it
        self.results.append({"task": result._task.get_name(), "host": result._host.get_name(),
                             "status": status, "result": data})

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps({"results": self.results}, default=str, indent=1))
