"""taler-ops engine: schema registry, dbinit, sync, audit and status for a GNU Taler auditor.

Pure Python on psycopg 3; no Ansible imports, so the same code runs as the
``taler-ops`` CLI on hosts and inside the Ansible modules in ``library/``.
"""

__version__ = "0.1.0"
