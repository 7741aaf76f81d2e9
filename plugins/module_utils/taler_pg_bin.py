# -*- coding: utf-8 -*-
"""Where the host's PostgreSQL programs are, and which version they are.

Pure Python (no psycopg, no Ansible), shared by library/pg_server_bin.py, the tests'
throwaway clusters (tests/pgcluster.py) and anything else that must not assume a
PostgreSQL major version.  Order of discovery:

1. an explicit directory (must hold the programs asked for);
   with a data directory that already holds a cluster, only programs of that cluster's major
   version (its ``PG_VERSION``) qualify in the steps below: a host that gained a newer
   PostgreSQL keeps running an existing cluster with the programs it was created with;
2. Debian's ``/usr/lib/postgresql/<major>/bin``: the highest major whose directory holds
   every program asked for;
3. ``pg_config --bindir`` when ``pg_config`` is on PATH and that directory holds them;
4. the directory of the programs on PATH, when they are all in one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

DEBIAN_ROOT = "/usr/lib/postgresql"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class NotFound(Exception):
    pass


def _version_key(name):
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return None


def debian_bin_dirs(root=DEBIAN_ROOT):
    """``root/<major>/bin`` directories, highest major first."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = [(key, os.path.join(root, name, "bin")) for name in names
             for key in [_version_key(name)] if key is not None]
    return [path for _, path in sorted(found, reverse=True) if os.path.isdir(path)]


def has_programs(directory, programs):
    return all(os.access(os.path.join(directory, p), os.X_OK) and
               os.path.isfile(os.path.join(directory, p)) for p in programs)


def _pg_config_bindir(pg_config):
    try:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def cluster_major(data_dir):
    """The major version recorded in DATA_DIR/PG_VERSION ('15', '9.6'), or None."""
    if not data_dir:
        return None
    try:
        with open(os.path.join(data_dir, "PG_VERSION")) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def find_bin_dir(programs=("psql",), bin_dir=None, root=DEBIAN_ROOT, path=None, data_dir=None):
    """The directory holding every one of *programs*; NotFound says what was searched."""
    programs = list(programs) or ["psql"]
    if bin_dir:
        if has_programs(bin_dir, programs):
            return bin_dir
        missing = [p for p in programs if not has_programs(bin_dir, [p])]
        raise NotFound(f"{bin_dir} lacks PostgreSQL program(s) {', '.join(missing)}")
    major = cluster_major(data_dir)

    def right_version(directory):
        if major is None:
            return True
        try:
            found_major, found = program_version(directory, programs[0])
        except NotFound:
            return False
        return str(found_major) == major or found == major or found.startswith(major + ".")

    searched = []
    for directory in debian_bin_dirs(root):
        if major is not None and os.path.basename(os.path.dirname(directory)) != major:
            continue
        searched.append(directory)
        if has_programs(directory, programs):
            return directory
    pg_config = shutil.which("pg_config", path=path)
    if pg_config:
        directory = _pg_config_bindir(pg_config)
        if directory:
            searched.append(f"{directory} (pg_config --bindir)")
            if has_programs(directory, programs) and right_version(directory):
                return directory
    located = {os.path.dirname(os.path.realpath(w)) for w in
               (shutil.which(p, path=path) for p in programs) if w}
    if len(located) == 1:
        directory = located.pop()
        if has_programs(directory, programs) and right_version(directory):
            return directory
    searched.append("PATH")
    which = f"PostgreSQL {major} program(s)" if major else "PostgreSQL program(s)"
    because = (f" for the cluster in {data_dir} (PG_VERSION {major})" if major else "")
    raise NotFound(f"no directory holds the {which} {', '.join(programs)}{because} "
                   f"(searched {', '.join(searched)}); install PostgreSQL or name the directory")


def program_version(bin_dir, program="psql"):
    """(major, 'major.minor') from ``PROGRAM --version``, e.g. (15, '15.10')."""
    try:
        out = subprocess.run([os.path.join(bin_dir, program), "--version"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NotFound(f"{os.path.join(bin_dir, program)} --version failed: {exc}") from None
    m = _VERSION.search(out)
    if not m:
        raise NotFound(f"cannot read a version from {program} --version: {out.strip()!r}")
    major = int(m.group(1))
    return major, f"{major}.{m.group(2)}" if m.group(2) is not None else str(major)
