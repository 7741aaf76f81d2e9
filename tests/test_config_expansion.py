"""Taler/GNUnet INI configuration, $-expansion (reference taler-real-schema.md §5.2): one
test per rule, pure Python."""

import logging
import os

import pytest

from config_helpers import clean_env  # noqa: F401 (fixture)
from config_helpers import write
from taler_ops import config
from taler_ops.config import ConfigError, TalerConfig


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
