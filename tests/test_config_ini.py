"""Taler/GNUnet INI configuration, the syntax and the directives (reference
taler-real-schema.md §5.1): one test per rule, pure Python."""

import logging
import os
import pwd
import shutil
import tempfile

import pytest

from config_helpers import write
from taler_ops import config
from taler_ops.config import ConfigError, TalerConfig
from taler_ops.errors import EXIT_NOTCONFIGURED


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
