"""Taler/GNUnet INI configuration, where it is read from (reference taler-real-schema.md
§5.3, §5.4, §1.4): load order and default locations, the Debian layout, and the real
``taler-ops`` entry point without -c (one of them on a real database)."""

import os
import subprocess
import sys

import pytest

from config_helpers import clean_env  # noqa: F401 (fixture)
from config_helpers import write
from taler_ops import config
from taler_ops.config import ConfigError
from taler_ops.errors import EXIT_NOTCONFIGURED

TALER_OPS = os.path.join(os.path.dirname(sys.executable), "taler-ops")


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
    ("generate", "taler-exchange", "exchangedb-postgres"),
])
def test_cli_without_c_reads_the_projects_default_file(tmp_path, command, project, section):
    xdg = tmp_path / "xdg"
    conf = write(xdg / f"{project}.conf", f"[{section}]\n\nCONFIG = not-a-uri\n")
    other = "taler-auditor" if project == "taler-exchange" else "taler-exchange"
    write(xdg / f"{other}.conf", f"[{section}]\nCONFIG = also-wrong-but-other-file\n")
    extra = ["--rows", "1"] if command == "generate" else ["-t"] if command == "audit" else ["--check"]
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
