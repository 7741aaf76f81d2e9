# -*- coding: utf-8 -*-
"""Documentation of the connection options shared by the taler-ops modules."""


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name, IP address or UNIX socket directory of the PostgreSQL server.
      - Omitted means libpq's default.
    type: str
  login_port:
    description: Port of the PostgreSQL server (also names the socket file in a socket directory).
    type: int
    default: 5432
  login_user:
    description: Database role to connect as. Omitted means libpq's default (the OS user).
    type: str
  login_password:
    description:
      - Password of O(login_user). Never logged nor returned.
    type: str
  login_db:
    description: Database to connect to.
    type: str
    required: true
    aliases: [db]
  ssl_mode:
    description: libpq C(sslmode) of the connection.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ssl_rootcert:
    description: CA certificate to verify the server with (C(sslrootcert)).
    type: path
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
requirements:
  - psycopg >= 3.1 on the managed host
"""
