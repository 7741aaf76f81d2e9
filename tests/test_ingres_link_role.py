"""roles/ingres' link keeper files: the supervisor restarts the keeper except on a
configuration error, the configuration points at the ingres socket, and the argv
the role runs is one the CLI accepts."""

import ast
import os
import shlex
import subprocess

import jinja2
import yaml

from taler_ops import cli, config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLE = os.path.join(ROOT, "roles", "ingres")


def _env():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")))
    env.filters["quote"] = lambda v: shlex.quote(str(v))
    env.filters["dirname"] = os.path.dirname
    return env


def _vars():
    with open(os.path.join(ROLE, "defaults", "main.yml")) as fh:
        values = yaml.safe_load(fh)
    with open(os.path.join(ROLE, "vars", "main.yml")) as fh:
        values.update(yaml.safe_load(fh))
    values.update(ansible_managed="test", ansible_facts={})
    env = _env()
    for _ in range(5):      # resolve the defaults' references to each other
        values = {k: _render(env, v, values) for k, v in values.items()}
    return values


def _render(env, value, values):
    if not isinstance(value, str):
        return value
    try:
        return env.from_string(value).render(**values)
    except jinja2.TemplateError:    # Ansible-only filters elsewhere in the role
        return value


def test_supervisor_restarts_the_keeper_but_not_a_configuration_error(tmp_path):
    runs = tmp_path / "runs"
    runs.write_text("")
    body = f'echo run >> {shlex.quote(str(runs))}; [ "$(wc -l < {shlex.quote(str(runs))})" -ge 2 ] && exit 6; exit 5'
    script = tmp_path / "supervise.sh"
    script.write_text(_env().get_template("link-supervise.sh.j2").render(
        ansible_managed="test", __ingres_link_pidfile=str(tmp_path / "pid"),
        __ingres_link_log=str(tmp_path / "log"), __ingres_link_argv=["/bin/sh", "-c", body]))
    subprocess.run(["/bin/sh", str(script)], timeout=30, check=True)
    log = (tmp_path / "log").read_text()
    assert len(runs.read_text().splitlines()) == 2
    assert "status 5, restarting" in log and "status 6 (configuration), not restarting" in log
    assert not (tmp_path / "pid").exists()


def test_configuration_and_argv_are_what_the_cli_takes(tmp_path):
    values = _vars()
    # Taler's layout: the main file pulls its database section from secrets/.
    assert values["__ingres_link_conf"] == "/etc/taler-auditor/ingres-link.conf"
    assert values["__ingres_link_secret"] == \
        "/etc/taler-auditor/secrets/ingres-link-db.secret.conf"
    conf = tmp_path / os.path.basename(values["__ingres_link_conf"])
    secret = tmp_path / "secrets" / values["__ingres_link_secret_name"]
    secret.parent.mkdir()
    conf.write_text(_env().get_template("link.conf.j2").render(**values))
    secret.write_text(_env().get_template("link-db.secret.conf.j2").render(**values))
    assert "CONFIG" not in conf.read_text()
    cfg = config.load(str(conf))
    assert cfg.origin("exchangedb-postgres", "CONFIG").startswith(str(secret))
    uri = config.exchangedb_uri(cfg)
    assert "host=%2Frun%2Ftaler-ops%2Fingres" in uri or "host=/run/taler-ops/ingres" in uri
    assert "port=5442" in uri and "user=taler-ingres" in uri and "taler_exchange" in uri
    argv = ast.literal_eval(values["__ingres_link_argv"].strip())  # a rendered list literal
    assert argv[0].endswith("/bin/taler-ops")
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command == "ingres-link" and args.state.endswith("/state.json")
    assert args.max_strikes == 3 and args.stuck_retry == 3600
