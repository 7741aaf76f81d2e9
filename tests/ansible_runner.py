"""Run tasks through the real ``ansible-playbook`` against localhost, for module tests.

Every call writes a one-play playbook into a temporary directory and runs it with the
project's ansible.cfg (so library/, module_utils and doc fragments resolve) and the
venv's python as the target interpreter.  With the ``taler_json`` callback (tests/callback_plugins) the per-task
results come back parsed; the raw stdout is kept for "is this secret anywhere?" checks.

    from ansible_runner import run_tasks, run_module
    res = run_module("pg_role", {"name": "x", "login_db": "postgres"}, check=True, diff=True)
    assert res.ok and res.result["changed"]
"""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


class Run:
    def __init__(self, proc, callback):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.results = []
        if callback == "taler_json":
            start = proc.stdout.find('{\n "results"')
            data = json.loads(proc.stdout[start:]) if start >= 0 else {"results": []}
            self.results = [entry["result"] for entry in data["results"]]

    @property
    def result(self):
        """The last task's result."""
        return self.results[-1]

    @property
    def ok(self):
        return self.rc == 0

    def __repr__(self):
        return f"Run(rc={self.rc}, results={self.results!r}, stderr={self.stderr[-2000:]!r})"


def run_tasks(tasks, check=False, diff=False, verbosity=0, callback="taler_json", extra_vars=None,
              env=None, timeout=300):
    """Run ``tasks`` (a list of task dicts) on localhost; returns a Run."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    with tempfile.TemporaryDirectory(prefix="taler-ops-play-") as tmp:
        path = os.path.join(tmp, "play.yml")
        with open(path, "w") as fh:
            json.dump(play, fh)  # JSON is YAML
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}", path]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        full_env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                        ANSIBLE_STDOUT_CALLBACK=callback,
                        ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, "tests", "callback_plugins"), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
                        ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
        full_env.update(env or {})
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=full_env,
                              timeout=timeout)
    return Run(proc, callback)


def run_module(module, args, **kwargs):
    """Run one module call; ``.result`` is its result dict."""
    return run_tasks([{"name": module, module: args}], **kwargs)
