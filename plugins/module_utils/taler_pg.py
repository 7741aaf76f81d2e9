# -*- coding: utf-8 -*-
"""Ansible-side glue shared by every taler-ops module: one connection argument
spec, one way to build the conninfo, one way to fail with an engine error.

Kept outside the ``taler_ops`` engine package, which must not import Ansible.
"""

from __future__ import annotations

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def connection_argument_spec():
    return dict(
        login_host=dict(type="str"),
        login_port=dict(type="int", default=5432),
        login_user=dict(type="str"),
        login_password=dict(type="str", no_log=True),
        login_db=dict(type="str", required=True, aliases=["db"]),
        ssl_mode=dict(type="str", choices=SSL_MODES),
        ssl_rootcert=dict(type="path"),
        connect_timeout=dict(type="int", default=10),
    )


def conninfo(module):
    """The libpq conninfo for the module's login_* options (holds the password: never return it)."""
    from ansible.module_utils.taler_ops.db import build_conninfo

    p = module.params
    return build_conninfo(p["login_db"], host=p["login_host"], port=p["login_port"],
                          user=p["login_user"], password=p["login_password"],
                          sslmode=p["ssl_mode"], sslrootcert=p["ssl_rootcert"],
                          connect_timeout=p["connect_timeout"])


def require_psycopg(module):
    try:
        import psycopg  # noqa: F401  (the engine needs it on the managed host)
    except ImportError:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib("psycopg (psycopg[binary] >= 3.1)"))


def fail_with(module, exc, **result):
    """Fail the task with an engine error's message and Taler exit code."""
    module.fail_json(msg=str(exc), exit_code=getattr(exc, "exit_code", 1), **result)
