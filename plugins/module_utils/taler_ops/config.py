"""Taler/GNUnet INI configuration, read the way Taler's own tools read it.

The rules are those of GNUnet's configuration library as used by Taler
(reference: ``taler-real-schema.md`` section 5); this is an independent
implementation of them:

Syntax
    Tabs and CR are blanks; lines are trimmed.  ``#`` and ``%`` start a
    comment line; there are no trailing comments (``a = b # c`` is ``b # c``).
    ``[section]`` opens a section, ``name = value`` sets an option; one pair of
    surrounding double quotes is removed from the value.  Section and option
    names are case-insensitive; a later assignment overrides an earlier one.
    An option before any section and a line without ``=`` are errors.

Directives (names case-insensitive)
    ``@inline@ PATH``                  parse PATH here; missing/unreadable is an error.
    ``@inline-matching@ GLOB``         parse every match, in strcmp order; no match is fine.
    ``@inline-secret@ SECTION PATH``   take only ``[SECTION]`` from PATH.  An unreadable
                                       PATH is not an error: the section is marked
                                       inaccessible and every later read of an option in
                                       it fails as missing, naming the file.  PATH may not
                                       contain directives.
    Relative PATH/GLOB are resolved against the directory of the containing
    file after ``realpath``.  Directives nest.

Reading values: two kinds, never mixed up
    :meth:`TalerConfig.get_string` returns the value as written (``$`` is
    *not* expanded): this is how connection strings such as
    ``[exchangedb-postgres] CONFIG`` are read.
    :meth:`TalerConfig.get_filename` expands ``$NAME``, ``${NAME}``,
    ``${NAME:-default}`` and ``${NAME:=default}`` lazily, at read time, from
    ``[PATHS]`` then the environment (recursively, limit 128; an undefined
    name without default stays as written, with a warning), then replaces a
    leading ``~`` by ``$HOME`` and makes a relative path absolute against the
    current directory: this is how ``SQL_DIR`` and other paths are read.

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
import glob
import logging
import os

from .errors import ConfigError

log = logging.getLogger(__name__)

_BLANKS = " \t\r\n"
_MAX_INLINE_DEPTH = 64
_MAX_EXPANSION_DEPTH = 128

PROJECTS = ("taler-exchange", "taler-auditor")
INSTALL_PREFIX = "/usr/"


class _ExpansionLoop(Exception):
    pass


class _Section:
    __slots__ = ("options", "secret_file")

    def __init__(self):
        self.options = {}          # lower-case name -> (value, "file:line")
        self.secret_file = None    # set when @inline-secret@ could not read its file


class TalerConfig:
    """A loaded configuration.  ``TalerConfig(path)`` parses one file, no defaults."""

    def __init__(self, path=None, project=None):
        self.path = os.path.abspath(path) if path else None
        self.project = project
        self.files = []            # every file parsed, in order (diagnostics)
        self._sections = {}
        if path:
            self.parse_file(path)

    # -- parsing -------------------------------------------------------------
    def describe(self):
        """How to name this configuration in a message."""
        if self.path:
            return self.path
        return "the default configuration (" + (", ".join(self.files) or "no file") + ")"

    def _section(self, name):
        return self._sections.setdefault(name.lower(), _Section())

    def set_string(self, section, option, value, origin="(set by program)"):
        self._section(section).options[option.lower()] = (value, origin)

    def parse_file(self, path, _chain=()):
        """Parse *path* (and what it inlines) into this configuration."""
        real = os.path.realpath(path)
        if real in _chain:
            raise ConfigError(f"{_chain[-1]}: @inline@ loop: {real} includes itself")
        if len(_chain) > _MAX_INLINE_DEPTH:
            raise ConfigError(f"{path}: inline directives nested more than "
                              f"{_MAX_INLINE_DEPTH} deep")
        text = self._read_text(path)
        self.files.append(os.path.abspath(path))
        self._parse(text, os.path.abspath(path), os.path.dirname(real), _chain + (real,))

    @staticmethod
    def _read_text(path, what="configuration file"):
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            raise ConfigError(f"{what} {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"{what} {path} is a directory") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{what} {path} cannot be read: {exc}") from None

    def _parse(self, text, name, base_dir, chain, restrict=None):
        """Parse *text* (from file *name*).  *restrict*: only this section (@inline-secret@)."""
        section = None
        for lineno, raw in enumerate(text.split("\n"), 1):
            line = raw.strip(_BLANKS)
            where = f"{name}:{lineno}"
            if not line or line[0] in "#%":
                continue
            if line[0] == "@":
                if restrict is not None:
                    raise ConfigError(f"{where}: illegal directive in a file read by "
                                      f"@inline-secret@ for section [{restrict}]: {line!r}")
                self._directive(line, where, base_dir, chain)
                continue
            if line[0] == "[":
                if line[-1] != "]" or not line[1:-1].strip(_BLANKS):
                    raise ConfigError(f"{where}: malformed section header {line!r}")
                section = line[1:-1].strip(_BLANKS).lower()
                if restrict is None:
                    self._section(section)
                continue
            if "=" not in line:
                raise ConfigError(f"{where}: syntax error: expected 'OPTION = value', "
                                  f"got {line!r}")
            if section is None:
                raise ConfigError(f"{where}: syntax error: option {line!r} outside of any "
                                  "[section]")
            key, value = line.split("=", 1)
            key = key.strip(_BLANKS).lower()
            if not key:
                raise ConfigError(f"{where}: syntax error: option without a name")
            value = value.strip(_BLANKS)
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            if restrict is not None and section != restrict:
                continue
            self._section(section).options[key] = (value, where)

    def _directive(self, line, where, base_dir, chain):
        end = line.find("@", 1)
        if end < 0:
            raise ConfigError(f"{where}: malformed directive {line!r}")
        directive = line[1:end].lower()
        arg = line[end + 1:].strip(_BLANKS)
        if directive == "inline":
            if not arg:
                raise ConfigError(f"{where}: @inline@ without a file name")
            target = os.path.join(base_dir, arg)
            try:
                self.parse_file(target, chain)
            except ConfigError as exc:
                raise ConfigError(f"{where}: @inline@ {arg}: {exc}") from None
        elif directive == "inline-matching":
            if not arg:
                raise ConfigError(f"{where}: @inline-matching@ without a pattern")
            pattern = os.path.join(base_dir, arg)
            # strcmp order: compare the bytes of the names
            for match in sorted(glob.glob(pattern), key=os.fsencode):
                try:
                    self.parse_file(match, chain)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: @inline-matching@ {arg}: {exc}") from None
        elif directive == "inline-secret":
            parts = arg.split(None, 1)
            if len(parts) != 2:
                raise ConfigError(f"{where}: @inline-secret@ needs a SECTION and a PATH, "
                                  f"got {arg!r}")
            section, rel = parts[0].lower(), parts[1].strip(_BLANKS)
            target = os.path.join(base_dir, rel)
            sec = self._section(section)    # a secret file without the section: empty
            if not os.access(target, os.R_OK) or os.path.isdir(target):
                log.info("%s: @inline-secret@ %s is not readable by this process; "
                         "section [%s] is inaccessible", where, target, section)
                sec.secret_file = os.path.abspath(target)
                return
            text = self._read_text(target, "secret configuration file")
            self.files.append(os.path.abspath(target))
            self._parse(text, os.path.abspath(target),
                        os.path.dirname(os.path.realpath(target)), chain, restrict=section)
        else:
            raise ConfigError(f"{where}: unknown directive @{line[1:end]}@ (known: @inline@, "
                              "@inline-matching@, @inline-secret@)")

    # -- raw access ------------------------------------------------------------
    def has_section(self, section):
        return section.lower() in self._sections

    def sections(self):
        return sorted(self._sections)

    def options(self, section):
        sec = self._sections.get(section.lower())
        return sorted(sec.options) if sec else []

    def origin(self, section, option):
        """``file:line`` that set the option (``None`` if unset)."""
        sec = self._sections.get(section.lower())
        entry = sec.options.get(option.lower()) if sec else None
        return entry[1] if entry else None

    def _lookup(self, section, option, default, required):
        """(value, origin) or (default, None); raises ConfigError when required and missing."""
        sec = self._sections.get(section.lower())
        if sec is not None and sec.secret_file is not None:
            msg = (f"{self.describe()}: option {option} in section [{section}] is missing: "
                   f"the section comes from {sec.secret_file} (@inline-secret@), which this "
                   f"process (uid {os.getuid()}) cannot read")
            if default is not None or not required:
                log.warning("%s", msg)
                return default, None
            raise ConfigError(msg)
        entry = sec.options.get(option.lower()) if sec is not None else None
        if entry is None:
            if default is not None or not required:
                return default, None
            if sec is None:
                raise ConfigError(f"{self.describe()}: section [{section}] is missing "
                                  f"(needed for option {option})")
            raise ConfigError(f"{self.describe()}: option {option} in section [{section}] "
                              "is missing")
        return entry

    # -- typed reads -------------------------------------------------------------
    def get_string(self, section, option, default=None, required=True):
        """The value as written: no ``$``-expansion (connection strings, names)."""
        return self._lookup(section, option, default, required)[0]

    # Historical name: a plain read is a string read, as in Taler.
    get = get_string

    def get_filename(self, section, option, default=None, required=True):
        """A path: ``$``-expanded, then ``~`` and relative-path expanded."""
        value, origin = self._lookup(section, option, default, required)
        if value is None:
            return None
        return filename_expand(self.expand(value, origin or f"[{section}] {option}"))

    def get_int(self, section, option, default=None, required=True):
        raw, origin = self._lookup(section, option,
                                   None if default is None else str(default), required)
        if raw is None:
            return None
        try:
            return int(raw.strip(_BLANKS))
        except ValueError:
            raise ConfigError(
                f"{origin or self.describe()}: option {option} in section [{section}] must be "
                f"an integer, got {raw!r}") from None

    # -- $-expansion ---------------------------------------------------------------
    def expand(self, value, where="value"):
        """Expand every ``$`` reference in *value* (Taler's expand_dollar)."""
        try:
            return self._expand(value, where, 0)
        except _ExpansionLoop:
            log.warning("%s: recursive $-expansion suspected (more than %d levels); %r left "
                        "unexpanded", where, _MAX_EXPANSION_DEPTH, value)
            return value

    def _resolve(self, name):
        sec = self._sections.get("paths")
        if sec is not None and sec.secret_file is None and name.lower() in sec.options:
            return sec.options[name.lower()][0]
        return os.environ.get(name)

    def _expand(self, value, where, depth):
        if depth > _MAX_EXPANSION_DEPTH:
            raise _ExpansionLoop()
        out = []
        i = 0
        n = len(value)
        while i < n:
            ch = value[i]
            if ch != "$":
                out.append(ch)
                i += 1
                continue
            if i + 1 < n and value[i + 1] == "{":
                close = _matching_brace(value, i + 1)
                if close < 0:
                    raise ConfigError(f"{where}: missing closing '}}' in {value!r}")
                term = value[i + 2:close]
                original = value[i:close + 1]
                i = close + 1
                seps = [pos for pos in (term.find(":-"), term.find(":=")) if pos >= 0]
                if seps:
                    name, default = term[:min(seps)], term[min(seps) + 2:]
                else:
                    name, default = term, None
            else:
                j = i + 1
                while j < n and value[j] not in "/\\ \t":
                    j += 1
                name, default, original = value[i + 1:j], None, value[i:j]
                i = j
            found = self._resolve(name) if name else None
            if found is None:
                found = default     # ${NAME:-x} and ${NAME:=x} alike; nothing is assigned
            if found is None:
                log.warning("%s: $%s is neither in [PATHS] nor in the environment; "
                            "left unexpanded", where, name)
                out.append(original)
                continue
            out.append(self._expand(found, where, depth + 1))
        return "".join(out)


def _matching_brace(text, start):
    """Index of the '}' closing the '{' at *start*, or -1."""
    level = 0
    for k in range(start, len(text)):
        if text[k] == "{":
            level += 1
        elif text[k] == "}":
            level -= 1
            if level == 0:
                return k
    return -1


def filename_expand(path):
    """``~`` -> ``$HOME``; a relative path becomes absolute against the current directory."""
    if not path:
        return path
    if path.startswith("~"):
        home = os.environ.get("HOME")
        if not home:
            raise ConfigError(f"cannot expand {path!r}: HOME is not set")
        rest = path[1:].lstrip("/")
        return home.rstrip("/") + "/" + rest
    if os.path.isabs(path):
        return path
    return os.path.join(os.getcwd(), path)


# -- default locations -------------------------------------------------------------
def _check_project(project):
    if project not in PROJECTS:
        raise ValueError(f"unknown Taler project {project!r}")


def default_config_candidates(project, environ=None):
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


def find_default_config(project, environ=None):
    """The first readable default main file, or None."""
    for candidate in default_config_candidates(project, environ):
        if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def defaults_dir(project, environ=None):
    """``$TALER_BASE_CONFIG`` or None.

    Taler falls back to its installed ``<prefix>/share/<project>/config.d``; taler-ops does
    not (see the module docstring: its SQL_DIR default would change what dbinit builds)."""
    _check_project(project)
    env = os.environ if environ is None else environ
    return env.get("TALER_BASE_CONFIG") or None


def install_paths(project):
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


def load(path=None, project=None):
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


def database_uri(cfg, section):
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


def exchangedb_uri(cfg):
    return database_uri(cfg, "exchangedb-postgres")


def auditordb_uri(cfg):
    return database_uri(cfg, "auditordb-postgres")


def sql_dir(cfg, section):
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


def exchangedb_sql_dir(cfg):
    return sql_dir(cfg, "exchangedb-postgres")


def auditordb_sql_dir(cfg):
    return sql_dir(cfg, "auditordb-postgres")
