"""Taler-style INI configuration files.

The format is GNUnet's: ``[section]`` headers, ``OPTION = value`` lines,
comments starting with ``#`` or ``%``, ``@INLINE@ other.conf`` includes and
``$VAR`` / ``${VAR}`` / ``${VAR:-default}`` expansion from the ``[PATHS]``
section and the environment.  Section and option names are case-insensitive.
Every error names the file (and line) so the operator knows what to fix.
"""

import os
import re

from .errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)(?::-([^}]*))?\}|\$([A-Za-z0-9_]+)")
_MAX_INLINE_DEPTH = 8


class TalerConfig:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._sections = {}
        self._origin = {}
        self._read(self.path, 0)

    # -- parsing -------------------------------------------------------------
    def _read(self, path, depth):
        if depth > _MAX_INLINE_DEPTH:
            raise ConfigError(f"{path}: @INLINE@ nested more than {_MAX_INLINE_DEPTH} deep")
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
        section = None
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line[0] in "#%":
                continue
            if line.lower().startswith("@inline@"):
                target = line[len("@inline@"):].strip()
                if not target:
                    raise ConfigError(f"{path}:{lineno}: @INLINE@ without a file name")
                self._read(os.path.join(os.path.dirname(path), target), depth + 1)
                continue
            if line.startswith("["):
                if not line.endswith("]") or len(line) < 3:
                    raise ConfigError(f"{path}:{lineno}: malformed section header {line!r}")
                section = line[1:-1].strip().lower()
                self._sections.setdefault(section, {})
                continue
            if "=" not in line:
                raise ConfigError(f"{path}:{lineno}: expected 'OPTION = value', got {line!r}")
            if section is None:
                raise ConfigError(f"{path}:{lineno}: option outside of any [section]")
            key, value = line.split("=", 1)
            key = key.strip().lower()
            if not key:
                raise ConfigError(f"{path}:{lineno}: option without a name")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            self._sections[section][key] = value
            self._origin[(section, key)] = f"{path}:{lineno}"

    # -- access --------------------------------------------------------------
    def has_section(self, section):
        return section.lower() in self._sections

    def get(self, section, option, default=None, required=True):
        sec = self._sections.get(section.lower())
        if sec is None:
            if default is not None or not required:
                return default
            raise ConfigError(f"{self.path}: section [{section}] is missing")
        if option.lower() not in sec:
            if default is not None or not required:
                return default
            raise ConfigError(f"{self.path}: option {option} in section [{section}] is missing")
        return self._expand(sec[option.lower()], section, option, 0)

    def _expand(self, value, section, option, depth):
        if depth > 16:
            raise ConfigError(f"{self.path}: [{section}] {option}: variable expansion loops")

        def repl(match):
            name = match.group(1) or match.group(3)
            fallback = match.group(2)
            paths = self._sections.get("paths", {})
            if name.lower() in paths:
                return self._expand(paths[name.lower()], "PATHS", name, depth + 1)
            if name in os.environ:
                return os.environ[name]
            if fallback is not None:
                return fallback
            raise ConfigError(
                f"{self.path}: [{section}] {option} uses ${name}, which is neither in [PATHS] "
                "nor in the environment")

        return _VAR.sub(repl, value)

    def get_int(self, section, option, default=None):
        raw = self.get(section, option, default=None if default is None else str(default))
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"{self.path}: option {option} in section [{section}] must be an integer, "
                f"got {raw!r}") from None


def load(path):
    if not path:
        raise ConfigError("no configuration file given (use -c FILE)")
    return TalerConfig(path)


def database_uri(cfg, section):
    """The libpq connection string in ``[section] CONFIG``, validated (not connected)."""
    from .db import parse_conninfo  # local: keeps config importable without psycopg

    uri = cfg.get(section, "CONFIG")
    if not uri:
        raise ConfigError(f"{cfg.path}: option CONFIG in section [{section}] is empty")
    try:
        parse_conninfo(uri)
    except ValueError as exc:
        raise ConfigError(
            f"{cfg.path}: option CONFIG in section [{section}] is not a valid libpq "
            f"connection URI: {exc}") from None
    return uri


def exchangedb_uri(cfg):
    return database_uri(cfg, "exchangedb-postgres")


def auditordb_uri(cfg):
    return database_uri(cfg, "auditordb-postgres")


def sql_dir(cfg, section):
    """``[section] SQL_DIR``: the directory of Taler's SQL files, or None (the built-in model).

    Taler reads it as a filename ($-expanded); it concatenates file names to it,
    so it must end with '/' there.  Here a missing slash is tolerated.
    """
    value = cfg.get(section, "SQL_DIR", required=False)
    if not value:
        return None
    if not os.path.isdir(value):
        raise ConfigError(f"{cfg.path}: [{section}] SQL_DIR {value} is not a directory")
    return value


def exchangedb_sql_dir(cfg):
    return sql_dir(cfg, "exchangedb-postgres")


def auditordb_sql_dir(cfg):
    return sql_dir(cfg, "auditordb-postgres")
