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

Every error is a :class:`ConfigError` (exit code 6) naming the file and line.

Where the files are and in which order a Taler program loads them, and the
options taler-ops reads (database URIs, SQL_DIR): ``config.py``.
"""

import glob
import logging
import os
from typing import Literal, overload

from .errors import ConfigError

# The reader's messages keep the logger they had before it left config.py: one
# logger for the configuration, whichever of its two modules speaks.
log = logging.getLogger("taler_ops.config")

_BLANKS = " \t\r\n"
_MAX_INLINE_DEPTH = 64
_MAX_EXPANSION_DEPTH = 128

# The Taler programs whose configuration (defaults and file names) taler-ops reads.
Project = Literal["taler-exchange", "taler-auditor"]


class _ExpansionLoop(Exception):
    pass


class _Section:
    __slots__ = ("options", "secret_file")

    def __init__(self) -> None:
        self.options: dict[str, tuple[str, str]] = {}   # lower-case name -> (value, "file:line")
        self.secret_file: str | None = None  # set when @inline-secret@ could not read its file


class TalerConfig:
    """A loaded configuration.  ``TalerConfig(path)`` parses one file, no defaults."""

    def __init__(self, path: str | None = None, project: Project | None = None) -> None:
        self.path = os.path.abspath(path) if path else None
        self.project = project
        self.files: list[str] = []      # every file parsed, in order (diagnostics)
        self._sections: dict[str, _Section] = {}
        if path:
            self.parse_file(path)

    # -- parsing -------------------------------------------------------------
    def describe(self) -> str:
        """How to name this configuration in a message."""
        if self.path:
            return self.path
        return "the default configuration (" + (", ".join(self.files) or "no file") + ")"

    def _section(self, name: str) -> _Section:
        return self._sections.setdefault(name.lower(), _Section())

    def set_string(self, section: str, option: str, value: str,
                   origin: str = "(set by program)") -> None:
        self._section(section).options[option.lower()] = (value, origin)

    def parse_file(self, path: str, _chain: tuple[str, ...] = ()) -> None:
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
    def _read_text(path: str, what: str = "configuration file") -> str:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            raise ConfigError(f"{what} {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"{what} {path} is a directory") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{what} {path} cannot be read: {exc}") from None

    def _parse(self, text: str, name: str, base_dir: str, chain: tuple[str, ...],
               restrict: str | None = None) -> None:
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

    def _directive(self, line: str, where: str, base_dir: str, chain: tuple[str, ...]) -> None:
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
    def has_section(self, section: str) -> bool:
        return section.lower() in self._sections

    def sections(self) -> list[str]:
        return sorted(self._sections)

    def options(self, section: str) -> list[str]:
        sec = self._sections.get(section.lower())
        return sorted(sec.options) if sec else []

    def origin(self, section: str, option: str) -> str | None:
        """``file:line`` that set the option (``None`` if unset)."""
        sec = self._sections.get(section.lower())
        entry = sec.options.get(option.lower()) if sec else None
        return entry[1] if entry else None

    def _lookup(self, section: str, option: str, default: str | None,
                required: bool) -> tuple[str | None, str | None]:
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
    # A read returns a value or raises, unless it may be missing (required=False, no default).
    @overload
    def get_string(self, section: str, option: str, default: str, required: bool = ...) -> str: ...
    @overload
    def get_string(self, section: str, option: str, default: None = ...,
                   required: Literal[True] = ...) -> str: ...
    @overload
    def get_string(self, section: str, option: str, default: str | None = ...,
                   required: bool = ...) -> str | None: ...

    def get_string(self, section: str, option: str, default: str | None = None,
                   required: bool = True) -> str | None:
        """The value as written: no ``$``-expansion (connection strings, names)."""
        return self._lookup(section, option, default, required)[0]

    # Historical name: a plain read is a string read, as in Taler.
    get = get_string

    @overload
    def get_filename(self, section: str, option: str, default: str, required: bool = ...) -> str: ...
    @overload
    def get_filename(self, section: str, option: str, default: None = ...,
                     required: Literal[True] = ...) -> str: ...
    @overload
    def get_filename(self, section: str, option: str, default: str | None = ...,
                     required: bool = ...) -> str | None: ...

    def get_filename(self, section: str, option: str, default: str | None = None,
                     required: bool = True) -> str | None:
        """A path: ``$``-expanded, then ``~`` and relative-path expanded."""
        value, origin = self._lookup(section, option, default, required)
        if value is None:
            return None
        return filename_expand(self.expand(value, origin or f"[{section}] {option}"))

    @overload
    def get_int(self, section: str, option: str, default: int, required: bool = ...) -> int: ...
    @overload
    def get_int(self, section: str, option: str, default: None = ...,
                required: Literal[True] = ...) -> int: ...
    @overload
    def get_int(self, section: str, option: str, default: int | None = ...,
                required: bool = ...) -> int | None: ...

    def get_int(self, section: str, option: str, default: int | None = None,
                required: bool = True) -> int | None:
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
    def expand(self, value: str, where: str = "value") -> str:
        """Expand every ``$`` reference in *value* (Taler's expand_dollar)."""
        try:
            return self._expand(value, where, 0)
        except _ExpansionLoop:
            log.warning("%s: recursive $-expansion suspected (more than %d levels); %r left "
                        "unexpanded", where, _MAX_EXPANSION_DEPTH, value)
            return value

    def _resolve(self, name: str) -> str | None:
        sec = self._sections.get("paths")
        if sec is not None and sec.secret_file is None and name.lower() in sec.options:
            return sec.options[name.lower()][0]
        return os.environ.get(name)

    def _expand(self, value: str, where: str, depth: int) -> str:
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


def _matching_brace(text: str, start: int) -> int:
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


def filename_expand(path: str) -> str:
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
