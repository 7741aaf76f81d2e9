"""Taler/GNUnet INI configuration (reference taler-real-schema.md §5.1-5.4, §1.4).

One test per rule.  Pure Python except the CLI tests at the end, which run the
real ``taler-ops`` entry point (and one of them a real database).
"""

import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from taler_ops import config
from taler_ops.config import ConfigError, TalerConfig
from taler_ops.errors import EXIT_NOTCONFIGURED

TALER_OPS = os.path.join(os.path.dirname(sys.executable), "taler-ops")


def write(path, text):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    return path


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Taler variables from the caller's environment leak into a test."""
    for name in ("TALER_BASE_CONFIG", "XDG_CONFIG_HOME", "TALER_TEST_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


# -- 5.1 syntax ------------------------------------------------------------------
def test_comments_blank_lines_tabs_and_cr(tmp_path):
    p = write(tmp_path / "a.conf",
              "# comment\r\n% also a comment\r\n\r\n\t[s]\t\r\n\t opt\t=\t value \t\r\n"
              "   # indented comment\n")
    cfg = TalerConfig(p)
    assert cfg.get_string("s", "opt") == "value"
    assert cfg.options("s") == ["opt"]


def test_no_trailing_comments(tmp_path):
    cfg = TalerConfig(write(tmp_path / "a.conf", "[s]\na = b # c\nd = e % f\n"))
    assert cfg.get_string("s", "a") == "b # c"
    assert cfg.get_string("s", "d") == "e % f"


def test_one_pair_of_double_quotes_removed(tmp_path):
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            '[s]\na = "postgres:///x"\nb = ""two""\nc = "open\nd = "\ne = ""\n'))
    assert cfg.get_string("s", "a") == "postgres:///x"
    assert cfg.get_string("s", "b") == '"two"'
    assert cfg.get_string("s", "c") == '"open'
    assert cfg.get_string("s", "d") == '"'
    assert cfg.get_string("s", "e") == ""


def test_value_keeps_later_equals_signs(tmp_path):
    cfg = TalerConfig(write(tmp_path / "a.conf", "[s]\nCONFIG = host=/run/x port=5432\n"))
    assert cfg.get_string("s", "config") == "host=/run/x port=5432"


def test_section_and_option_names_case_insensitive(tmp_path):
    cfg = TalerConfig(write(tmp_path / "a.conf", "[ExchangeDB-Postgres]\nConfig = x\n"))
    assert cfg.get_string("exchangedb-postgres", "CONFIG") == "x"
    assert cfg.get_string("EXCHANGEDB-POSTGRES", "config") == "x"
    assert cfg.has_section("exchangeDB-postgres")


def test_later_assignment_overrides(tmp_path):
    write(tmp_path / "over.conf", "[S]\nA = 3\n")
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[s]\na = 1\n[other]\nx = y\n[s]\nA = 2\n@inline@ over.conf\n"))
    assert cfg.get_string("s", "a") == "3"
    assert cfg.origin("s", "a") == f"{tmp_path}/over.conf:2"


def test_option_before_any_section_is_an_error(tmp_path):
    p = write(tmp_path / "a.conf", "# header\nA = 1\n[s]\n")
    with pytest.raises(ConfigError, match=rf"{p}:2: .*outside of any \[section\]"):
        TalerConfig(p)


def test_line_without_equals_is_an_error(tmp_path):
    p = write(tmp_path / "a.conf", "[s]\na = 1\njust words\n")
    with pytest.raises(ConfigError, match=rf"{p}:3: syntax error.*'just words'"):
        TalerConfig(p)
    assert issubclass(ConfigError, Exception) and ConfigError("x").exit_code == EXIT_NOTCONFIGURED


def test_malformed_section_header(tmp_path):
    p = write(tmp_path / "a.conf", "[s\n")
    with pytest.raises(ConfigError, match=rf"{p}:1: malformed section header"):
        TalerConfig(p)


def test_missing_file_and_missing_option_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.conf does not exist"):
        TalerConfig(str(tmp_path / "nope.conf"))
    p = write(tmp_path / "a.conf", "[s]\n")
    cfg = TalerConfig(p)
    with pytest.raises(ConfigError, match=rf"{p}: option CONFIG in section \[s\] is missing"):
        cfg.get_string("s", "CONFIG")
    with pytest.raises(ConfigError, match=rf"{p}: section \[t\] is missing"):
        cfg.get_string("t", "CONFIG")
    assert cfg.get_string("s", "CONFIG", required=False) is None
    assert cfg.get_string("s", "CONFIG", default="d") == "d"


# -- 5.1 directives ------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["@inline@", "@INLINE@", "@Inline@"])
def test_inline_relative_to_the_including_file(tmp_path, spelling):
    write(tmp_path / "etc" / "sub" / "part.conf", "[s]\nfrom_part = yes\n")
    p = write(tmp_path / "etc" / "main.conf", f"[s]\na = 1\n{spelling} sub/part.conf\nb = 2\n")
    cfg = TalerConfig(p)
    assert cfg.get_string("s", "from_part") == "yes"
    # after the inline we are still in the section the inlined file left open
    assert cfg.get_string("s", "b") == "2"


def test_inline_missing_file_fails_the_whole_load(tmp_path):
    p = write(tmp_path / "main.conf", "[s]\n@inline@ missing.conf\n")
    with pytest.raises(ConfigError, match=rf"{p}:2: @inline@ missing.conf: .*missing.conf "
                                          "does not exist"):
        TalerConfig(p)


def test_inline_unreadable_file_fails_the_whole_load(tmp_path):
    os.makedirs(tmp_path / "dir.conf")
    p = write(tmp_path / "main.conf", "@inline@ dir.conf\n")
    with pytest.raises(ConfigError, match=r"dir.conf is a directory"):
        TalerConfig(p)


def test_inline_matching_strcmp_order_and_later_wins(tmp_path):
    names = ["b.conf", "B.conf", "_u.conf", "10.conf", "9.conf", "a.conf", "Z.conf"]
    for name in names:
        write(tmp_path / "conf.d" / name, f"[s]\nlast = {name}\n[seen]\n{name} = 1\n")
    write(tmp_path / "conf.d" / "ignored.txt", "[s]\nlast = txt\n")
    p = write(tmp_path / "main.conf", "@INLINE-matching@ conf.d/*.conf\n")
    cfg = TalerConfig(p)
    order = [os.path.basename(f) for f in cfg.files[1:]]
    assert order == ["10.conf", "9.conf", "B.conf", "Z.conf", "_u.conf", "a.conf", "b.conf"]
    assert order == sorted(names, key=lambda n: n.encode())   # strcmp = bytewise
    assert cfg.get_string("s", "last") == "b.conf"


def test_inline_matching_without_match_is_fine(tmp_path):
    p = write(tmp_path / "main.conf", "[s]\na = 1\n@inline-matching@ conf.d/*.conf\n")
    assert TalerConfig(p).get_string("s", "a") == "1"


def test_inline_secret_takes_only_its_section(tmp_path):
    write(tmp_path / "secrets" / "db.secret.conf",
          "[auditordb-postgres]\nCONFIG = postgres:///secret\n"
          "[exchange]\nCURRENCY = EVIL\n[paths]\nDATADIR = /evil/\n")
    p = write(tmp_path / "main.conf",
              "[exchange]\nCURRENCY = KUDOS\n"
              "@Inline-Secret@ auditordb-postgres secrets/db.secret.conf\n")
    cfg = TalerConfig(p)
    assert cfg.get_string("auditordb-postgres", "CONFIG") == "postgres:///secret"
    assert cfg.get_string("exchange", "CURRENCY") == "KUDOS"
    assert not cfg.has_section("paths")


def test_inline_secret_section_names_are_case_insensitive(tmp_path):
    write(tmp_path / "s.conf", "[AuditorDB-Postgres]\nConfig = x\n")
    cfg = TalerConfig(write(tmp_path / "main.conf", "@inline-secret@ AUDITORDB-postgres s.conf\n"))
    assert cfg.get_string("auditordb-postgres", "config") == "x"


def test_inline_secret_without_the_section_gives_an_empty_section(tmp_path):
    write(tmp_path / "s.conf", "[other]\nA = 1\n")
    cfg = TalerConfig(write(tmp_path / "main.conf", "@inline-secret@ auditordb-postgres s.conf\n"))
    assert cfg.has_section("auditordb-postgres")
    assert cfg.options("auditordb-postgres") == []
    assert not cfg.has_section("other")


def test_inline_secret_file_may_not_contain_directives(tmp_path):
    write(tmp_path / "more.conf", "[s]\nA = 1\n")
    s = write(tmp_path / "s.conf", "[s]\nB = 1\n@inline@ more.conf\n")
    p = write(tmp_path / "main.conf", "@inline-secret@ s s.conf\n")
    with pytest.raises(ConfigError, match=rf"{s}:3: illegal directive .*@inline-secret@"):
        TalerConfig(p)


def test_inline_secret_syntax_errors_elsewhere_in_the_file_still_fail(tmp_path):
    s = write(tmp_path / "s.conf", "[s]\nB = 1\n[other]\ngarbage\n")
    with pytest.raises(ConfigError, match=rf"{s}:4: syntax error"):
        TalerConfig(write(tmp_path / "main.conf", "@inline-secret@ s s.conf\n"))


def test_inline_secret_needs_section_and_path(tmp_path):
    p = write(tmp_path / "main.conf", "@inline-secret@ onlyonearg\n")
    with pytest.raises(ConfigError, match=rf"{p}:1: @inline-secret@ needs a SECTION and a PATH"):
        TalerConfig(p)


def test_inline_secret_nonexistent_path_marks_the_section_inaccessible(tmp_path, caplog):
    """A PATH that does not exist is as unreadable as a 0640 file (access(R_OK) fails):
    the load succeeds, reads of the section fail as missing and name the file."""
    p = write(tmp_path / "main.conf",
              "[auditordb-postgres]\nCONFIG = postgres:///default\n"
              "@inline-secret@ auditordb-postgres secrets/nope.secret.conf\n"
              "[auditor]\nBASE_URL = http://x/\n")
    cfg = TalerConfig(p)
    assert cfg.get_string("auditor", "BASE_URL") == "http://x/"
    secret = str(tmp_path / "secrets" / "nope.secret.conf")
    with pytest.raises(ConfigError, match=rf"option CONFIG in section \[auditordb-postgres\] is "
                                          rf"missing: the section comes from {secret}"):
        config.auditordb_uri(cfg)
    with caplog.at_level(logging.WARNING, logger="taler_ops.config"):
        assert cfg.get_string("auditordb-postgres", "CONFIG", required=False) is None
    assert secret in caplog.text


def _read_as(uid, gid, main):
    """Load *main* in a forked child that runs as uid/gid (no exec: the venv may not be
    readable by that user); return what it saw of the two sections."""
    import json
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child
        try:
            os.close(rfd)
            if uid is not None:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            out = {"uid": os.getuid()}
            try:
                cfg = config.TalerConfig(main)
                for section in ("auditordb-postgres", "auditor"):
                    try:
                        out[section] = cfg.get_string(section, "CONFIG")
                    except ConfigError as exc:
                        out[section] = "ERROR " + str(exc)
            except Exception as exc:               # the load itself must not fail
                out["load"] = f"{type(exc).__name__}: {exc}"
            os.write(wfd, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_inline_secret_0640_file_of_another_owner():
    """The real case: secrets/auditor-db.secret.conf is root:root 0640 (Debian: owner:group
    of the service, 0640) and the reader is neither.  Root can read any file, so when the
    tests run as root the reader is a forked child that drops to the unprivileged user
    'nobody' before loading; as an ordinary user the test makes the file 0200 (unreadable
    by its owner, the test user) instead."""
    base = tempfile.mkdtemp(prefix="taler-ops-secret-")
    try:
        os.chmod(base, 0o755)
        etc = os.path.join(base, "etc")
        secret = write(os.path.join(etc, "secrets", "auditor-db.secret.conf"),
                       "[auditordb-postgres]\nCONFIG = postgres:///taler-auditor\n")
        main = write(os.path.join(etc, "taler-auditor.conf"),
                     "[auditor]\nCONFIG = public\n"
                     "@inline-secret@ auditordb-postgres secrets/auditor-db.secret.conf\n")
        for d in (etc, os.path.dirname(secret)):
            os.chmod(d, 0o755)
        os.chmod(main, 0o644)
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            assert nobody.pw_uid != 0
            os.chown(secret, 0, 0)
            os.chmod(secret, 0o640)
            # the privileged reader sees the secret ...
            assert _read_as(None, None, main)["auditordb-postgres"] == "postgres:///taler-auditor"
            other = _read_as(nobody.pw_uid, nobody.pw_gid, main)
            assert other["uid"] == nobody.pw_uid
        else:
            os.chmod(secret, 0o200)
            other = _read_as(None, None, main)
        # ... the other user loads the same file without error, and the section is missing
        assert "load" not in other, other
        assert other["auditor"] == "public"
        assert other["auditordb-postgres"].startswith("ERROR ")
        assert "option CONFIG in section [auditordb-postgres] is missing" in \
            other["auditordb-postgres"]
        assert secret in other["auditordb-postgres"]
    finally:
        shutil.rmtree(base)


def test_relative_paths_resolve_against_the_realpath_of_the_including_file(tmp_path):
    real = tmp_path / "real"
    write(real / "conf.d" / "x.conf", "[s]\nfrom = real\n")
    write(real / "secrets" / "s.conf", "[db]\nCONFIG = real-secret\n")
    write(real / "main.conf",
          "@inline-matching@ conf.d/*.conf\n@inline-secret@ db secrets/s.conf\n")
    os.makedirs(tmp_path / "elsewhere" / "conf.d")
    write(tmp_path / "elsewhere" / "conf.d" / "x.conf", "[s]\nfrom = symlink-dir\n")
    os.symlink(real / "main.conf", tmp_path / "elsewhere" / "main.conf")
    cfg = TalerConfig(str(tmp_path / "elsewhere" / "main.conf"))
    assert cfg.get_string("s", "from") == "real"
    assert cfg.get_string("db", "CONFIG") == "real-secret"


def test_directives_nest(tmp_path):
    write(tmp_path / "a" / "main.conf", "@inline@ ../b/level1.conf\n")
    write(tmp_path / "b" / "level1.conf", "@inline-matching@ d/*.conf\n")
    write(tmp_path / "b" / "d" / "level2.conf", "@inline-secret@ db ../../c/s.conf\n[s]\nx = 2\n")
    write(tmp_path / "c" / "s.conf", "[db]\nCONFIG = deep\n")
    cfg = TalerConfig(str(tmp_path / "a" / "main.conf"))
    assert cfg.get_string("db", "CONFIG") == "deep"
    assert cfg.get_string("s", "x") == "2"


def test_inline_loop_is_an_error(tmp_path):
    write(tmp_path / "a.conf", "@inline@ b.conf\n")
    write(tmp_path / "b.conf", "@inline@ a.conf\n")
    with pytest.raises(ConfigError, match=r"includes itself"):
        TalerConfig(str(tmp_path / "a.conf"))


def test_unknown_directive_is_an_error(tmp_path):
    p = write(tmp_path / "a.conf", "@include@ x.conf\n")
    with pytest.raises(ConfigError, match=rf"{p}:1: unknown directive @include@"):
        TalerConfig(p)


# -- 5.2 $-expansion -------------------------------------------------------------------
def test_strings_are_never_expanded(tmp_path, clean_env):
    clean_env.setenv("PW", "expanded")
    p = write(tmp_path / "a.conf",
              "[paths]\nHOST = /run/x\n"
              "[exchangedb-postgres]\n"
              "CONFIG = postgresql://u:pa$PW@/db?host=$HOST&port=5432\n"
              "[auditordb-postgres]\nCONFIG = postgres:///${HOST}\n")
    cfg = TalerConfig(p)
    assert config.exchangedb_uri(cfg) == "postgresql://u:pa$PW@/db?host=$HOST&port=5432"
    assert config.auditordb_uri(cfg) == "postgres:///${HOST}"
    assert cfg.get_string("exchangedb-postgres", "CONFIG").count("$") == 2


def test_filenames_expand_from_paths_case_insensitively(tmp_path, clean_env):
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[PATHS]\nTaler_Data = /var/lib/t\n[s]\nF = $TALER_DATA/x\n"
                            "G = ${taler_data}/y\n"))
    assert cfg.get_filename("s", "F") == "/var/lib/t/x"
    assert cfg.get_filename("s", "G") == "/var/lib/t/y"


def test_paths_before_environment_then_environment(tmp_path, clean_env):
    clean_env.setenv("BOTH", "/from-env")
    clean_env.setenv("ONLYENV", "/only-env")
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[paths]\nBOTH = /from-paths\n[s]\nA = $BOTH/a\nB = $ONLYENV/b\n"))
    assert cfg.get_filename("s", "A") == "/from-paths/a"
    assert cfg.get_filename("s", "B") == "/only-env/b"


def test_environment_names_are_case_sensitive(tmp_path, clean_env):
    clean_env.setenv("MYDIR", "/m")
    cfg = TalerConfig(write(tmp_path / "a.conf", "[s]\nA = /x/$mydir\n"))
    assert cfg.get_filename("s", "A") == "/x/$mydir"


@pytest.mark.parametrize("value,expected", [
    ("$D/x", "/d/x"),
    ("$D\\x", "/d\\x"),
    ("/a/$D b", "/a//d b"),
    ("/a/$D\tb", "/a//d\tb"),
    ("$D.x/y", "/dx/y"),          # '.' does not end a name: $D.x is the variable D.x
    ("$D-x", "/dashx"),
])
def test_unbraced_name_ends_at_slash_backslash_or_blank(tmp_path, clean_env, value, expected):
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            f"[paths]\nD = /d\nD.x = /dx\nD-x = /dashx\n[s]\nA = {value}\n"))
    assert cfg.get_filename("s", "A") == expected


def test_braced_forms_and_defaults(tmp_path, clean_env):
    clean_env.setenv("HOME", "/home/op")
    clean_env.delenv("TMPDIR", raising=False)
    clean_env.delenv("TMP", raising=False)
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[paths]\nX = /x\n"
                            "TALER_HOME = ${TALER_TEST_HOME:-${HOME:-${USERPROFILE}}}\n"
                            "RUN = ${TMPDIR:-${TMP:-/tmp}}/taler-auditor-runtime/\n"
                            "[s]\n"
                            "A = ${X}y\n"
                            "B = ${UNSET:-/def}/b\n"
                            "C = ${UNSET:=/eq}/c\n"
                            "D = ${X:-/unused}/d\n"
                            "E = ${UNSET:-$X}/e\n"
                            "F = $TALER_HOME/f\n"
                            "G = $RUN\n"
                            "H = ${UNSET:=/eq}/${UNSET:-/again}\n"))
    assert cfg.get_filename("s", "A") == "/xy"
    assert cfg.get_filename("s", "B") == "/def/b"
    assert cfg.get_filename("s", "C") == "/eq/c"
    assert cfg.get_filename("s", "D") == "/x/d"
    assert cfg.get_filename("s", "E") == "/x/e"
    assert cfg.get_filename("s", "F") == "/home/op/f"
    assert cfg.get_filename("s", "G") == "/tmp/taler-auditor-runtime/"
    # := assigns nothing: UNSET is still unset for the second reference
    assert cfg.get_filename("s", "H") == "/eq//again"
    assert "unset" not in cfg.options("paths")


def test_expansion_is_recursive_with_a_limit(tmp_path, clean_env, caplog):
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[paths]\nA = $B/a\nB = $C/b\nC = /c\nLOOP = $LOOP/x\n"
                            "[s]\nOK = $A/f\nBAD = $LOOP/f\n"))
    assert cfg.get_filename("s", "OK") == "/c/b/a/f"
    with caplog.at_level(logging.WARNING, logger="taler_ops.config"):
        assert cfg.get_filename("s", "BAD") == os.path.join(os.getcwd(), "$LOOP/f")
    assert "recursive" in caplog.text and f"{tmp_path}/a.conf:8" in caplog.text


def test_undefined_without_default_is_left_unexpanded(tmp_path, clean_env, caplog):
    clean_env.delenv("NOT_DEFINED_ANYWHERE", raising=False)
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[s]\nA = /x/${NOT_DEFINED_ANYWHERE}/y\nB = /x/$NOT_DEFINED_ANYWHERE\n"))
    with caplog.at_level(logging.WARNING, logger="taler_ops.config"):
        assert cfg.get_filename("s", "A") == "/x/${NOT_DEFINED_ANYWHERE}/y"
        assert cfg.get_filename("s", "B") == "/x/$NOT_DEFINED_ANYWHERE"
    assert "NOT_DEFINED_ANYWHERE" in caplog.text


def test_unterminated_brace_is_an_error_naming_the_line(tmp_path, clean_env):
    p = write(tmp_path / "a.conf", "[s]\nA = ${X/y\n")
    with pytest.raises(ConfigError, match=rf"{p}:2: missing closing"):
        TalerConfig(p).get_filename("s", "A")


def test_expansion_is_lazy(tmp_path, clean_env):
    """[PATHS] set after the option (even in a later file) is what the read sees."""
    write(tmp_path / "later.conf", "[paths]\nBASE = /second\n")
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[s]\nSQL_DIR = $BASE/sql/\n[paths]\nBASE = /first\n"
                            "@inline@ later.conf\n"))
    assert cfg.get_string("s", "SQL_DIR") == "$BASE/sql/"
    assert cfg.get_filename("s", "SQL_DIR") == "/second/sql/"
    cfg.set_string("paths", "BASE", "/third")
    assert cfg.get_filename("s", "SQL_DIR") == "/third/sql/"


def test_filename_tilde_and_relative(tmp_path, clean_env, monkeypatch):
    clean_env.setenv("HOME", "/home/op")
    monkeypatch.chdir(tmp_path)
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[paths]\nREL = data\n[s]\nA = ~/x\nB = ~\nC = rel/dir/\n"
                            "D = $REL/y\nE = /abs\n"))
    assert cfg.get_filename("s", "A") == "/home/op/x"
    assert cfg.get_filename("s", "B") == "/home/op/"
    assert cfg.get_filename("s", "C") == f"{tmp_path}/rel/dir/"
    assert cfg.get_filename("s", "D") == f"{tmp_path}/data/y"
    assert cfg.get_filename("s", "E") == "/abs"
    # strings get neither
    assert cfg.get_string("s", "A") == "~/x"


def test_sql_dir_is_a_filename(tmp_path, clean_env):
    sql = tmp_path / "share" / "sql"
    sql.mkdir(parents=True)
    clean_env.setenv("SHARE", str(tmp_path / "share"))
    cfg = TalerConfig(write(tmp_path / "a.conf",
                            "[paths]\nDATA = ${SHARE}/\n"
                            "[exchangedb-postgres]\nSQL_DIR = ${DATA}sql/\n"
                            "[auditordb-postgres]\nSQL_DIR = $DATA/nope/\n"))
    assert config.exchangedb_sql_dir(cfg) == f"{sql}/"
    with pytest.raises(ConfigError, match=r"a.conf:6: \[auditordb-postgres\] SQL_DIR .*/nope/ "
                                          r"is not a directory"):
        config.auditordb_sql_dir(cfg)
    assert config.sql_dir(TalerConfig(write(tmp_path / "b.conf", "[x]\n")), "x") is None


def test_sql_dir_default_from_installation_paths(tmp_path, clean_env):
    cfg = config.load(write(tmp_path / "a.conf", "[exchangedb-postgres]\nSQL_DIR = ${DATADIR}sql/\n"),
                      project="taler-exchange")
    assert cfg.get_filename("exchangedb-postgres", "SQL_DIR") == "/usr/share/taler-exchange/sql/"


def test_invalid_connection_string_names_file_and_line(tmp_path):
    p = write(tmp_path / "a.conf", "[exchangedb-postgres]\n\nCONFIG = nonsense\n")
    with pytest.raises(ConfigError, match=rf"{p}:3: option CONFIG .* not a valid libpq"):
        config.exchangedb_uri(TalerConfig(p))


# -- 5.3 load order and default locations ----------------------------------------------
@pytest.mark.parametrize("project", ["taler-exchange", "taler-auditor"])
def test_paths_prefilled_from_the_installation(tmp_path, clean_env, project):
    cfg = config.load(write(tmp_path / "a.conf", "[s]\nD = $DATADIR\n"), project=project)
    assert cfg.get_string("paths", "DATADIR") == f"/usr/share/{project}/"
    assert cfg.get_filename("s", "D") == f"/usr/share/{project}/"
    assert cfg.get_string("PATHS", "prefix") == "/usr/"


def test_defaults_from_taler_base_config_sorted_then_main(tmp_path, clean_env):
    base = tmp_path / "config.d"
    write(base / "b.conf", "[exchangedb-postgres]\nCONFIG = postgres:///from-b\nSQL_DIR = x/\n")
    write(base / "a.conf", "[exchangedb-postgres]\nCONFIG = postgres:///from-a\n"
                           "[paths]\nDATADIR = /opt/share/\n")
    write(base / "c.txt", "not parsed")
    clean_env.setenv("TALER_BASE_CONFIG", str(base))
    main = write(tmp_path / "main.conf", "[exchangedb-postgres]\nSQL_DIR = ${DATADIR}sql/\n")
    cfg = config.load(main, project="taler-exchange")
    assert [os.path.basename(f) for f in cfg.files] == ["a.conf", "b.conf", "main.conf"]
    assert config.exchangedb_uri(cfg) == "postgres:///from-b"      # default: later file wins
    assert cfg.get_filename("exchangedb-postgres", "SQL_DIR") == "/opt/share/sql/"  # main wins


def test_taler_base_config_not_a_directory(tmp_path, clean_env):
    clean_env.setenv("TALER_BASE_CONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"TALER_BASE_CONFIG"):
        config.load(write(tmp_path / "m.conf", "[s]\n"), project="taler-auditor")


def test_default_candidates(clean_env, tmp_path):
    env = {"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/op"}
    assert config.default_config_candidates("taler-auditor", env) == [
        "/xdg/taler-auditor.conf", "/etc/taler-auditor.conf",
        "/etc/taler-auditor/taler-auditor.conf"]
    assert config.default_config_candidates("taler-exchange", {"HOME": "/home/op"}) == [
        "/home/op/.config/taler-exchange.conf", "/etc/taler-exchange.conf",
        "/etc/taler-exchange/taler-exchange.conf"]


def test_default_main_file_xdg_then_home_config(tmp_path, clean_env):
    home = tmp_path / "home"
    write(home / ".config" / "taler-auditor.conf", "[s]\nwho = home\n")
    cfg = config.load(project="taler-auditor")
    assert cfg.path == str(home / ".config" / "taler-auditor.conf")
    assert cfg.get_string("s", "who") == "home"
    xdg = tmp_path / "xdg"
    write(xdg / "taler-auditor.conf", "[s]\nwho = xdg\n")
    clean_env.setenv("XDG_CONFIG_HOME", str(xdg))
    assert config.load(project="taler-auditor").get_string("s", "who") == "xdg"
    # the project decides the file name
    write(xdg / "taler-exchange.conf", "[s]\nwho = exchange\n")
    assert config.load(project="taler-exchange").get_string("s", "who") == "exchange"


def test_unreadable_default_candidate_is_skipped(tmp_path, clean_env):
    xdg = tmp_path / "xdg"
    os.makedirs(xdg / "taler-auditor.conf")           # a directory is not a readable file
    clean_env.setenv("XDG_CONFIG_HOME", str(xdg))
    found = config.find_default_config("taler-auditor")
    assert found != str(xdg / "taler-auditor.conf")


def test_no_main_file_means_defaults_only(tmp_path, clean_env, monkeypatch):
    clean_env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(config, "find_default_config", lambda project, environ=None: None)
    base = tmp_path / "config.d"
    write(base / "auditordb-postgres.conf", "[auditordb-postgres]\nCONFIG = postgres:///d\n")
    clean_env.setenv("TALER_BASE_CONFIG", str(base))
    cfg = config.load(project="taler-auditor")
    assert cfg.path is None
    assert config.auditordb_uri(cfg) == "postgres:///d"
    with pytest.raises(ConfigError, match=r"the default configuration .*none of .*"
                                          r"taler-auditor.conf.* is readable"):
        config.exchangedb_uri(cfg)


def test_explicit_unreadable_or_malformed_file_aborts(tmp_path, clean_env):
    with pytest.raises(ConfigError, match=r"does not exist"):
        config.load(str(tmp_path / "nope.conf"), project="taler-auditor")
    with pytest.raises(ConfigError, match=r"bad.conf:2: syntax error"):
        config.load(write(tmp_path / "bad.conf", "[s]\nx\n"), project="taler-auditor")


def test_load_without_project_needs_a_file():
    with pytest.raises(ConfigError, match=r"no configuration file given"):
        config.load(None)


# -- 5.4 the Debian layout --------------------------------------------------------------
def debian_tree(root):
    etc = os.path.join(str(root), "etc", "taler-auditor")
    write(os.path.join(etc, "taler-auditor.conf"),
          "# /etc/taler-auditor/taler-auditor.conf (as shipped)\n"
          "[auditor]\n# CURRENCY = KUDOS\n\n"
          "@inline-matching@ conf.d/*.conf\n"
          "@inline@ overrides.conf\n\n"
          "[paths]\nTALER_HOME = /var/lib/taler-auditor\n"
          "TALER_DATA_HOME = /var/lib/taler-auditor/\n"
          "TALER_CONFIG_HOME = /etc/taler-auditor/\n"
          "TALER_RUNTIME_DIR = /run/taler-auditor/\n"
          "TALER_CACHE_HOME = /var/cache/taler-auditor/\n")
    write(os.path.join(etc, "conf.d", "auditor-system.conf"),
          "@inline-secret@ auditordb-postgres ../secrets/auditor-db.secret.conf\n"
          "[auditor]\nDATABASE = postgres\nSERVE = unix\n"
          "UNIXPATH = ${TALER_RUNTIME_DIR}httpd/auditor-http.sock\n")
    write(os.path.join(etc, "conf.d", "exchange-db.conf"),
          "@inline-secret@ exchangedb-postgres ../secrets/exchange-db.secret.conf\n"
          "[exchangedb-postgres]\nSQL_DIR = /usr/share/taler-exchange/sql/\n")
    write(os.path.join(etc, "conf.d", "zz-local.conf.disabled"), "[auditor]\nSERVE = tcp\n")
    write(os.path.join(etc, "overrides.conf"),
          "[auditor]\nCURRENCY = KUDOS\nBASE_URL = \"https://auditor.example/\"\n")
    write(os.path.join(etc, "secrets", "auditor-db.secret.conf"),
          "[auditordb-postgres]\nCONFIG = postgres:///taler-auditor\n")
    write(os.path.join(etc, "secrets", "exchange-db.secret.conf"),
          "[exchangedb-postgres]\n"
          "CONFIG = postgresql://taler-auditor-sync@/taler-exchange?host=/run/taler-ops/safe\n"
          "SQL_DIR = /evil/\n")
    return etc


def test_debian_layout(tmp_path, clean_env):
    etc = debian_tree(tmp_path)
    cfg = config.load(os.path.join(etc, "taler-auditor.conf"), project="taler-auditor")
    assert config.auditordb_uri(cfg) == "postgres:///taler-auditor"
    assert config.exchangedb_uri(cfg) == \
        "postgresql://taler-auditor-sync@/taler-exchange?host=/run/taler-ops/safe"
    # the secret file contributes every option of its own section (SQL_DIR too), but
    # exchange-db.conf assigns SQL_DIR after its @inline-secret@ line: the later one wins
    assert cfg.get_filename("exchangedb-postgres", "SQL_DIR") == "/usr/share/taler-exchange/sql/"
    assert cfg.origin("exchangedb-postgres", "SQL_DIR").endswith("conf.d/exchange-db.conf:3")
    assert cfg.origin("exchangedb-postgres", "CONFIG").endswith("exchange-db.secret.conf:2")
    assert cfg.get_string("auditor", "CURRENCY") == "KUDOS"
    assert cfg.get_string("auditor", "BASE_URL") == "https://auditor.example/"
    assert cfg.get_string("auditor", "SERVE") == "unix"
    assert cfg.get_filename("auditor", "UNIXPATH") == "/run/taler-auditor/httpd/auditor-http.sock"
    assert cfg.get_string("auditor", "UNIXPATH").startswith("${TALER_RUNTIME_DIR}")
    names = [os.path.relpath(f, etc) for f in cfg.files]
    assert names == ["taler-auditor.conf", "conf.d/auditor-system.conf",
                     "secrets/auditor-db.secret.conf", "conf.d/exchange-db.conf",
                     "secrets/exchange-db.secret.conf", "overrides.conf"]


def test_debian_layout_found_at_etc_project_project_conf(tmp_path, clean_env, monkeypatch):
    """Discovery of /etc/taler-auditor/taler-auditor.conf, with /etc moved into tmp."""
    etc = debian_tree(tmp_path)
    real = config.default_config_candidates

    def moved(project, environ=None):
        return [c.replace("/etc/", str(tmp_path) + "/etc/", 1) for c in real(project, environ)]
    monkeypatch.setattr(config, "default_config_candidates", moved)
    cfg = config.load(project="taler-auditor")
    assert cfg.path == os.path.join(etc, "taler-auditor.conf")
    assert config.auditordb_uri(cfg) == "postgres:///taler-auditor"


def test_debian_layout_secret_unreadable_defaults_do_not_leak_in(tmp_path, clean_env):
    """An inaccessible secret section stays missing even if the defaults set CONFIG."""
    etc = debian_tree(tmp_path)
    os.remove(os.path.join(etc, "secrets", "auditor-db.secret.conf"))
    base = tmp_path / "config.d"
    write(base / "auditordb-postgres.conf", "[auditordb-postgres]\nCONFIG = postgres:///dflt\n")
    clean_env.setenv("TALER_BASE_CONFIG", str(base))
    cfg = config.load(os.path.join(etc, "taler-auditor.conf"), project="taler-auditor")
    with pytest.raises(ConfigError, match=r"auditor-db.secret.conf"):
        config.auditordb_uri(cfg)
    assert config.exchangedb_uri(cfg).startswith("postgresql://taler-auditor-sync@")


# -- the real CLI ---------------------------------------------------------------------
def _cli(args, env, cwd):
    return subprocess.run([TALER_OPS, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TALER_BASE_CONFIG", "XDG_CONFIG_HOME")}
    env["HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


@pytest.mark.parametrize("command,project,section", [
    ("exchange-dbinit", "taler-exchange", "exchangedb-postgres"),
    ("auditor-dbinit", "taler-auditor", "auditordb-postgres"),
    ("audit", "taler-auditor", "exchangedb-postgres"),
    ("gen", "taler-exchange", "exchangedb-postgres"),
])
def test_cli_without_c_reads_the_projects_default_file(tmp_path, command, project, section):
    xdg = tmp_path / "xdg"
    conf = write(xdg / f"{project}.conf", f"[{section}]\n\nCONFIG = not-a-uri\n")
    other = "taler-auditor" if project == "taler-exchange" else "taler-exchange"
    write(xdg / f"{other}.conf", f"[{section}]\nCONFIG = also-wrong-but-other-file\n")
    extra = ["--rows", "1"] if command == "gen" else ["-t"] if command == "audit" else ["--check"]
    r = _cli([command, *extra], _env(tmp_path, XDG_CONFIG_HOME=str(xdg)), tmp_path)
    assert r.returncode == EXIT_NOTCONFIGURED, r.stderr
    assert f"{conf}:3: option CONFIG in section [{section}] is not a valid libpq" in r.stderr


def test_cli_without_c_and_without_any_file(tmp_path):
    r = _cli(["auditor-dbinit", "--check"],
             _env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "none")), tmp_path)
    if os.path.exists("/etc/taler-auditor.conf") or os.path.exists(
            "/etc/taler-auditor/taler-auditor.conf"):
        pytest.skip("this host has a system-wide taler-auditor.conf")
    assert r.returncode == EXIT_NOTCONFIGURED, r.stderr
    assert "is missing" in r.stderr and "taler-auditor.conf" in r.stderr


def test_cli_config_syntax_error_exit_code(tmp_path):
    bad = write(tmp_path / "bad.conf", "[exchangedb-postgres]\nCONFIG\n")
    r = _cli(["exchange-dbinit", "-c", bad, "--check"], _env(tmp_path), tmp_path)
    assert r.returncode == EXIT_NOTCONFIGURED
    assert f"{bad}:2: syntax error" in r.stderr


def test_cli_default_config_against_a_real_database(tmp_path, fresh_db):
    xdg = tmp_path / "xdg"
    # a '$' in the connection string must reach libpq verbatim: application_name shows it
    uri = fresh_db + ("&" if "?" in fresh_db else "?") + "application_name=taler%24HOME"
    write(xdg / "taler-exchange.conf",
          f"[paths]\nHOME = /nowhere\n[exchangedb-postgres]\nCONFIG = \"{uri}\"\n")
    env = _env(tmp_path, XDG_CONFIG_HOME=str(xdg))
    r = _cli(["exchange-dbinit"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli(["exchange-dbinit", "--check"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no pending patches" in r.stdout


def test_installed_config_d_is_not_read_without_taler_base_config(clean_env, monkeypatch,
                                                                  tmp_path):
    """A deliberate difference from Taler (docs/configuration.md): only $TALER_BASE_CONFIG."""
    assert config.defaults_dir("taler-exchange", {}) is None
    assert config.defaults_dir("taler-exchange", {"TALER_BASE_CONFIG": "/x"}) == "/x"
    monkeypatch.setattr(config, "INSTALL_PREFIX", str(tmp_path) + "/")
    write(tmp_path / "share" / "taler-exchange" / "config.d" / "exchangedb-postgres.conf",
          "[exchangedb-postgres]\nSQL_DIR = ${DATADIR}sql/\n")
    cfg = config.load(write(tmp_path / "m.conf", "[exchangedb-postgres]\nCONFIG = postgres:///x\n"),
                      project="taler-exchange")
    assert cfg.get_string("exchangedb-postgres", "SQL_DIR", required=False) is None
