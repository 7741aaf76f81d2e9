"""Taler's configuration as a Taler program loads it, and the options taler-ops reads.

The files are read by ``ini.py`` (syntax, directives, ``$``-expansion: the
rules of GNUnet's configuration library as Taler uses it).

Load order (:func:`load` with a *project*, as Taler's programs do)
    1. ``[PATHS]`` pre-filled with the installation directories of the project
       (prefix ``/usr/``; ``DATADIR`` is ``/usr/share/<project>/``);
    2. every ``*.conf`` of ``$TALER_BASE_CONFIG`` if set, sorted.  Unlike Taler, the
       installed ``/usr/share/<project>/config.d/`` is not read without it: its
       ``SQL_DIR`` default would silently switch dbinit from the built-in model to
       Taler's SQL files on every host where Taler is installed (set
       ``TALER_BASE_CONFIG=/usr/share/<project>/config.d`` to get Taler's defaults);
    3. the main file: ``-c FILE`` or, without it, the first readable of
       ``$XDG_CONFIG_HOME/<project>.conf`` (``~/.config/<project>.conf`` when
       ``XDG_CONFIG_HOME`` is unset), ``/etc/<project>.conf`` and
       ``/etc/<project>/<project>.conf``; none readable means defaults only.
       A ``-c`` file that is unreadable or malformed is an error.

Every error is a :class:`ConfigError` (exit code 6) naming the file and line.
"""

import fnmatch
import logging
import os
from collections.abc import Mapping

from .errors import ConfigError
from .ini import Project
from .ini import TalerConfig as TalerConfig  # what load() returns, named here for its users

PROJECTS: tuple[Project, ...] = ("taler-exchange", "taler-auditor")
INSTALL_PREFIX = "/usr/"

log = logging.getLogger(__name__)


# -- default locations -------------------------------------------------------------
def _check_project(project: str) -> None:
    if project not in PROJECTS:
        raise ValueError(f"unknown Taler project {project!r}")


def default_config_candidates(project: Project, environ: Mapping[str, str] | None = None) -> list[str]:
    """Where Taler's tools look for the main file when ``-c`` is omitted, in order."""
    _check_project(project)
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        first = os.path.join(xdg, f"{project}.conf")
    else:
        first = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config",
                             f"{project}.conf")
    return [first, f"/etc/{project}.conf", f"/etc/{project}/{project}.conf"]


def find_default_config(project: Project, environ: Mapping[str, str] | None = None) -> str | None:
    """The first readable default main file, or None."""
    for candidate in default_config_candidates(project, environ):
        if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def defaults_dir(project: Project, environ: Mapping[str, str] | None = None) -> str | None:
    """``$TALER_BASE_CONFIG`` or None.

    Taler falls back to its installed ``<prefix>/share/<project>/config.d``; taler-ops does
    not (see the module docstring: its SQL_DIR default would change what dbinit builds)."""
    _check_project(project)
    env = os.environ if environ is None else environ
    return env.get("TALER_BASE_CONFIG") or None


def install_paths(project: Project) -> dict[str, str]:
    """The ``[PATHS]`` values Taler pre-fills from the installation of *project*."""
    _check_project(project)
    p = INSTALL_PREFIX
    return {
        "PREFIX": p,
        "BINDIR": f"{p}bin/",
        "LIBDIR": f"{p}lib/{project}/",
        "DATADIR": f"{p}share/{project}/",
        "LIBEXECDIR": f"{p}lib/{project}/libexec/",
        "DOCDIR": f"{p}share/doc/{project}/",
        "ICONDIR": f"{p}share/icons/",
        "LOCALEDIR": f"{p}share/locale/",
    }


def load(path: str | None = None, project: Project | None = None) -> TalerConfig:
    """Load a configuration the way a Taler program of *project* does.

    With *project* (``taler-exchange`` or ``taler-auditor``): installation
    ``[PATHS]``, the defaults directory, then *path* or the default main file.
    Without *project*: just *path* (which is then required).
    """
    if project is None:
        if not path:
            raise ConfigError("no configuration file given (use -c FILE)")
        return TalerConfig(path)
    cfg = TalerConfig(project=project)
    for name, value in install_paths(project).items():
        cfg.set_string("PATHS", name, value, origin=f"(installation of {project})")
    base = defaults_dir(project)
    if base:
        if not os.path.isdir(base):
            raise ConfigError(f"defaults directory {base} (TALER_BASE_CONFIG) is not a "
                              "directory")
        for name in sorted((n for n in os.listdir(base) if fnmatch.fnmatch(n, "*.conf")),
                           key=os.fsencode):
            cfg.parse_file(os.path.join(base, name))
    if path:
        cfg.path = os.path.abspath(path)
        cfg.parse_file(path)
    else:
        found = find_default_config(project)
        if found:
            cfg.path = os.path.abspath(found)
            cfg.parse_file(found)
        else:
            log.info("no -c and none of %s is readable: defaults only",
                     ", ".join(default_config_candidates(project)))
            cfg.path = None
            cfg.files.append("no main file: none of "
                             + ", ".join(default_config_candidates(project)) + " is readable")
    return cfg


def database_uri(cfg: TalerConfig, section: str) -> str:
    """The libpq connection string in ``[section] CONFIG``: a string read, never expanded."""
    from .db import parse_conninfo  # local: keeps config importable without psycopg

    uri = cfg.get_string(section, "CONFIG")
    where = cfg.origin(section, "CONFIG") or cfg.describe()
    if not uri:
        raise ConfigError(f"{where}: option CONFIG in section [{section}] is empty")
    try:
        parse_conninfo(uri)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: option CONFIG in section [{section}] is not a valid libpq "
            f"connection URI: {exc}") from None
    return uri


def exchangedb_uri(cfg: TalerConfig) -> str:
    return database_uri(cfg, "exchangedb-postgres")


def auditordb_uri(cfg: TalerConfig) -> str:
    return database_uri(cfg, "auditordb-postgres")


def sql_dir(cfg: TalerConfig, section: str) -> str | None:
    """``[section] SQL_DIR``: the directory of Taler's SQL files, or None (the built-in model).

    Read as Taler reads it: a filename, so ``$``-expanded from ``[PATHS]`` and the
    environment, ``~`` and relative paths expanded.  Taler concatenates file names to
    it, so it must end with '/' there; here a missing slash is tolerated.
    """
    value = cfg.get_filename(section, "SQL_DIR", required=False)
    if not value:
        return None
    if not os.path.isdir(value):
        where = cfg.origin(section, "SQL_DIR") or cfg.describe()
        raise ConfigError(f"{where}: [{section}] SQL_DIR {value} is not a directory")
    return value


def exchangedb_sql_dir(cfg: TalerConfig) -> str | None:
    return sql_dir(cfg, "exchangedb-postgres")


def auditordb_sql_dir(cfg: TalerConfig) -> str | None:
    return sql_dir(cfg, "auditordb-postgres")
