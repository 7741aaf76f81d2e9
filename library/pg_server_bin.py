#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+
"""Ansible module: find the host's PostgreSQL binary directory and its version."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_server_bin
short_description: Find the directory of the host's PostgreSQL programs and their version
description:
  - Returns the directory that holds every program in O(programs), and the PostgreSQL version
    of those programs, so that no role or playbook hardcodes a major version.
  - With O(bin_dir) set, only checks that directory. Otherwise searches Debian's
    C(/usr/lib/postgresql/<major>/bin) from the highest major down, then C(pg_config --bindir),
    then C(PATH).
  - Changes nothing.
version_added: "0.1.0"
author: taler-ops developers
options:
  bin_dir:
    description: A directory to use instead of searching; empty means search.
    type: str
    default: ""
  programs:
    description: Programs the directory must hold.
    type: list
    elements: str
    default: [psql]
  data_dir:
    description:
      - Data directory of a cluster these programs will run. When it already holds a cluster,
        only programs of its major version (its C(PG_VERSION)) qualify, so that installing a
        newer PostgreSQL never points an existing cluster at the wrong server.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Runs in check mode too (it only reads).
  diff_mode:
    support: none
    description: Nothing to show.
"""

EXAMPLES = r"""
- name: Find the server programs
  pg_server_bin:
    bin_dir: "{{ pg_instance_bin_dir }}"
    programs: [initdb, pg_ctl, postgres, psql]
  register: __pg_bin
"""

RETURN = r"""
bin_dir:
  description: The directory found.
  returned: success
  type: str
  sample: /usr/lib/postgresql/15/bin
major:
  description: The major version of the programs found.
  returned: success
  type: int
  sample: 15
version:
  description: Major and minor version.
  returned: success
  type: str
  sample: "15.10"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.taler_pg_bin import NotFound, find_bin_dir, program_version


def main():
    module = AnsibleModule(argument_spec=dict(
        bin_dir=dict(type="str", default=""),
        programs=dict(type="list", elements="str", default=["psql"]),
        data_dir=dict(type="str", default=""),
    ), supports_check_mode=True)
    programs = module.params["programs"] or ["psql"]
    try:
        bin_dir = find_bin_dir(programs, bin_dir=module.params["bin_dir"] or None,
                               data_dir=module.params["data_dir"] or None)
        major, version = program_version(bin_dir, "postgres" if "postgres" in programs
                                         else programs[0])
    except NotFound as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, bin_dir=bin_dir, major=major, version=version)


if __name__ == "__main__":
    main()
