"""Roles are used through their declared entry points only (issue 19 item 2).

What a playbook needs from a role (stop the sync, grant privileges, pause the subscription,
remove a service, ...) is an entry point of that role: a task file in its tasks/ listed in
its meta/argument_specs.yml, whose options are documented and validated there.  Reads the
YAML of playbooks/ (with its group_vars), inventories/, molecule/ (and the scenarios'
shared .config/molecule/), roles/ and tests/, and the task lists tests/ builds in Python,
and fails when

- an include_role/import_role names a tasks_from that is not a declared entry point of that
  role (an internal task file, a file name with its extension, which would bypass the entry
  point's argument validation, or a templated name), or a role that does not exist;
- a play, a task or a role call sets a ``__<role>_`` variable of another role, one that
  role's files use (its internals, which it may rename at will);
- anything outside a role reads (or otherwise names) such a variable: what a caller needs
  from a role is a documented result (e.g. the fact pg_instance_found_bin_dir);
- a declared entry point has no task file, or a required option (or suboption) gets a value
  anyway - a default in the spec, in defaults/main.yml or in vars/main.yml (a placeholder
  would hide that the caller forgot it).
"""

import ast
import functools
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLES_DIR = os.path.join(ROOT, "roles")
ROLE_ACTIONS = {f"{prefix}{verb}_role" for prefix in ("", "ansible.builtin.", "ansible.legacy.")
                for verb in ("include", "import")}
TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")
# Keys of a play's `roles:` entry that are not role parameters.
ROLE_ENTRY_KEYWORDS = {"role", "name", "tags", "when", "vars", "become", "become_user",
                       "delegate_to", "environment", "tasks_from"}


class _Loader(yaml.SafeLoader):
    """Plain YAML, with Ansible's tags (!vault, !unsafe) read as their text."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node)
                              if isinstance(node, yaml.ScalarNode) else None)


def _load(path):
    with open(path) as fh:
        return yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _roles():
    return sorted(d for d in os.listdir(ROLES_DIR) if os.path.isdir(os.path.join(ROLES_DIR, d)))


def _entry_points(role):
    path = os.path.join(ROLES_DIR, role, "meta", "argument_specs.yml")
    return (_load(path) or {}).get("argument_specs", {}) if os.path.exists(path) else {}


def _tasks(items):
    """Every task dict in a task list, blocks' tasks included."""
    for task in items or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _plays_and_tasks(doc):
    """(plays, tasks) of a playbook or a task file."""
    if not isinstance(doc, list):
        return [], []
    plays = [d for d in doc if isinstance(d, dict) and ("hosts" in d or "import_playbook" in d)]
    if plays:
        tasks = [t for p in plays for key in TASK_LISTS[:4] for t in _tasks(p.get(key))]
        return plays, tasks
    return [], list(_tasks(doc))


@functools.lru_cache(maxsize=None)
def _internals(role):
    """The role's internal variables: every ``__<role>_*`` name its files use."""
    names = set()
    pattern = re.compile(rf"\b__{re.escape(role)}_\w+")
    for base, _dirs, files in os.walk(os.path.join(ROLES_DIR, role)):
        for f in files:
            with open(os.path.join(base, f), errors="replace") as fh:
                names.update(pattern.findall(fh.read()))
    return frozenset(names)


def _internal_var(name, own_role=None):
    """The role whose internal variable ``name`` is, unless it is ``own_role``'s own."""
    if not isinstance(name, str) or not name.startswith("__"):
        return None
    for role in _roles():
        if role != own_role and name in _internals(role):
            return role
    return None


def problems(doc, own_role=None):
    """What the rules above find in one loaded YAML document (a playbook or a task file)."""
    found = []
    plays, tasks = _plays_and_tasks(doc)

    def check_vars(where, mapping):
        for key in (mapping or {}) if isinstance(mapping, dict) else []:
            role = _internal_var(key, own_role)
            if role:
                found.append(f"{where} sets {key}, an internal variable of role {role}")

    for play in plays:
        where = f"play {play.get('name', '?')!r}"
        check_vars(where, play.get("vars"))
        for entry in play.get("roles") or []:
            if isinstance(entry, dict):
                name = entry.get("role") or entry.get("name")
                check_vars(f"{where}, role {name}", entry.get("vars"))
                check_vars(f"{where}, role {name}",
                           {k: v for k, v in entry.items() if k not in ROLE_ENTRY_KEYWORDS})
                if "tasks_from" in entry:
                    found.append(f"{where}, role {name}: tasks_from in a roles: entry")
    for task in tasks:
        where = f"task {task.get('name', '?')!r}"
        check_vars(where, task.get("vars"))
        for module in ("set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"):
            check_vars(where, task.get(module))
        for action in ROLE_ACTIONS & set(task):
            args = task[action] if isinstance(task[action], dict) else {"name": task[action]}
            name, tasks_from = args.get("name"), args.get("tasks_from")
            if tasks_from is None:
                continue  # main, the role's default entry point
            if not isinstance(name, str) or "{{" in name:
                found.append(f"{where}: tasks_from {tasks_from!r} of a templated role name {name!r}")
                continue
            if name not in _roles():
                found.append(f"{where}: no role {name!r}")
                continue
            declared = _entry_points(name)
            if tasks_from not in declared:
                found.append(f"{where}: {name} has no entry point {tasks_from!r} (declared: "
                             f"{', '.join(sorted(declared))}); tasks_from names one exactly, "
                             "without .yml, so that its options are validated")
    return found


def _strings(node):
    """Every string in a loaded YAML document, mapping keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def internal_uses(text_or_doc, own_role=None):
    """Every variable of another role's internals that a document (or a file's text) names:
    reads in templates and conditions as well as sets."""
    texts = [text_or_doc] if isinstance(text_or_doc, str) else _strings(text_or_doc)
    names = {name for text in texts for name in re.findall(r"(?<![\w])__[a-z]\w*", text)}
    found = []
    for name in sorted(names):
        role = _internal_var(name, own_role)
        if role:
            found.append(f"uses {name}, an internal variable of role {role}")
    return found


def _yaml_files(top):
    for base, dirs, files in os.walk(os.path.join(ROOT, top)):
        dirs[:] = [d for d in dirs if d not in ("templates", "files")]
        for f in sorted(files):
            if f.endswith((".yml", ".yaml")):
                yield os.path.join(base, f)


def _own_role(path):
    rel = os.path.relpath(path, ROLES_DIR)
    return None if rel.startswith("..") else rel.split(os.sep)[0]


# Everything that calls roles or wires their variables (playbooks/group_vars/ is under
# playbooks/; each molecule scenario's group_vars is a link to it).
CALLERS = ("playbooks", "inventories", "molecule", os.path.join(".config", "molecule"), "roles",
           "tests")


def test_playbooks_and_roles_use_only_declared_entry_points():
    found = []
    for top in CALLERS:
        for path in _yaml_files(top):
            if os.path.basename(path) == "argument_specs.yml":
                continue
            doc, own = _load(path), _own_role(path)
            mine = problems(doc, own_role=own)
            # A variable already reported as set is not reported again as used.
            mine += [u for u in internal_uses(doc, own_role=own)
                     if not any(u.split()[1] + "," in p for p in mine)]
            found += [f"{os.path.relpath(path, ROOT)}: {p}" for p in mine]
    assert not found, "\n".join(found)


# --- tests/ in Python: the same rules for the tasks they build and the names they use -----

# Tests that render one template of a role straight from its templates/ with that role's
# internal inputs (the template is the unit under test: a supervisor script's restart rule,
# a systemd unit's sandbox, the argv the CLI must accept).  Reaching these through an entry
# point would need a deployed service, which the molecule scenarios cover.  Each may name
# the internals of the roles listed, nothing else.
TEMPLATE_TESTS = {
    "test_sync_service_templates.py": {"sync_service", "pg_instance"},
    "test_ingres_link_role.py": {"ingres"},
}
NON_LITERAL = "{{ not a literal }}"


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NON_LITERAL


def python_role_calls(source):
    """(line, task) for every {include_role/import_role: {...}} dict literal in Python
    source; a value that is not a literal (a loop variable, say) reads as a template, which
    the check refuses: a test names the entry point it calls."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values):
            if isinstance(key, ast.Constant) and key.value in ROLE_ACTIONS:
                if isinstance(value, ast.Dict):
                    args = {_literal(k): _literal(v) for k, v in zip(value.keys, value.values)
                            if k is not None}
                else:
                    args = {"name": _literal(value)}
                calls.append((node.lineno, {"name": f"line {node.lineno}", key.value: args}))
    return calls


def test_tests_use_only_declared_entry_points_and_no_internals():
    found = []
    for name in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if not name.endswith(".py") or name == os.path.basename(__file__):
            continue
        with open(os.path.join(ROOT, "tests", name)) as fh:
            source = fh.read()
        for _line, task in python_role_calls(source):
            found += [f"tests/{name}: {p}" for p in problems([task])]
        allowed = TEMPLATE_TESTS.get(name, set())
        found += [f"tests/{name}: {u}" for u in internal_uses(source)
                  if u.rsplit(" ", 1)[1] not in allowed]
    assert not found, "\n".join(found)


def required_with_default(options, defaults, role_vars, where=""):
    """Required options (suboptions of list or dict options included) that get a value
    anyway: a default in the spec, the role's defaults/main.yml, or its vars/main.yml
    (which would even override the caller's).  A placeholder there would hide that the
    caller forgot the option."""
    found = []
    for option, opt in (options or {}).items():
        if not isinstance(opt, dict):
            continue
        name = f"{where}{option}"
        if opt.get("required"):
            if "default" in opt:
                found.append(f"required option {name} has a default in the spec")
            if not where and option in defaults:
                found.append(f"required option {name} has a default in defaults/main.yml")
            if not where and option in role_vars:
                found.append(f"required option {name} is set in vars/main.yml")
        found += required_with_default(opt.get("options"), {}, {}, f"{name}.")
    return found


def _role_file(role, kind):
    path = os.path.join(ROLES_DIR, role, kind, "main.yml")
    return (_load(path) or {}) if os.path.exists(path) else {}


def test_declared_entry_points_have_task_files_and_required_options_no_default():
    found = []
    for role in _roles():
        defaults, role_vars = _role_file(role, "defaults"), _role_file(role, "vars")
        for entry, spec in _entry_points(role).items():
            if not os.path.exists(os.path.join(ROLES_DIR, role, "tasks", f"{entry}.yml")):
                found.append(f"{role}: entry point {entry} has no tasks/{entry}.yml")
            for option in spec.get("options") or {}:
                if not option.startswith(f"{role}_"):
                    found.append(f"{role}: entry point {entry} option {option} lacks the role prefix")
            found += [f"{role}: entry point {entry}: {p}" for p in
                      required_with_default(spec.get("options"), defaults, role_vars)]
    assert not found, "\n".join(found)


def test_the_required_option_check_finds_placeholders():
    spec = {"r_host": {"type": "str", "required": True},
            "r_key": {"type": "str", "required": True, "default": "CHANGEME"},
            "r_entries": {"type": "list", "elements": "dict", "default": [], "options": {
                "user": {"type": "str", "required": True, "default": "all"}}}}
    assert required_with_default(spec, {}, {}) == [
        "required option r_key has a default in the spec",
        "required option r_entries.user has a default in the spec"]
    assert required_with_default({"r_host": spec["r_host"]}, {"r_host": "x"}, {"r_host": "y"}) == [
        "required option r_host has a default in defaults/main.yml",
        "required option r_host is set in vars/main.yml"]


@pytest.mark.parametrize("snippet,expected", [
    # An internal task file, with or without its extension, and a templated one.
    ([{"name": "t", "ansible.builtin.include_role": {"name": "sync_service",
                                                     "tasks_from": "service_systemd.yml"}}],
     "sync_service has no entry point 'service_systemd.yml'"),
    ([{"name": "t", "include_role": {"name": "sync_service", "tasks_from": "privileges.yml"}}],
     "sync_service has no entry point 'privileges.yml'"),
    ([{"name": "t", "ansible.builtin.import_role": {"name": "sync_service",
                                                    "tasks_from": "service_{{ mgr }}.yml"}}],
     "has no entry point 'service_{{ mgr }}.yml'"),
    ([{"name": "t", "ansible.builtin.include_role": {"name": "{{ r }}", "tasks_from": "absent"}}],
     "templated role name"),
    ([{"name": "t", "ansible.builtin.include_role": {"name": "no_such_role", "tasks_from": "x"}}],
     "no role 'no_such_role'"),
    # Another role's internals set from outside.
    ([{"name": "t", "ansible.builtin.include_role": {"name": "sync_service", "tasks_from": "service"},
       "vars": {"__sync_service_ingres_conf": "/x"}}],
     "sets __sync_service_ingres_conf, an internal variable of role sync_service"),
    ([{"hosts": "all", "name": "p", "vars": {"__pg_instance_unit": "x"}, "tasks": []}],
     "sets __pg_instance_unit"),
    ([{"hosts": "all", "name": "p", "roles": [{"role": "ingres", "__ingres_streaming": True}]}],
     "sets __ingres_streaming"),
    ([{"name": "t", "ansible.builtin.set_fact": {"__safe_copy_uri": "x"}}], "sets __safe_copy_uri"),
    ([{"name": "b", "block": [{"name": "t", "ansible.builtin.include_role": {
        "name": "ingres", "tasks_from": "link_keeper"}}]}],
     "ingres has no entry point 'link_keeper'"),
])
def test_the_check_finds_what_it_is_meant_to(snippet, expected):
    found = problems(snippet)
    assert any(expected in p for p in found), found


# The wiring line this check was written against (before pg_instance published
# pg_instance_found_bin_dir): it read pg_instance's registered result.
OLD_WIRING = {"exchange_publisher_restart_command": [
    "/usr/sbin/runuser", "-u", "{{ taler_exchange_user }}", "--",
    "{{ (__pg_instance_server.bin_dir if __pg_instance_server is defined else taler_pg_bin)"
    " | default('', true) | regex_replace('(.)$', '\\1/') }}pg_ctl", "restart"]}


@pytest.mark.parametrize("doc,expected", [
    (OLD_WIRING, "uses __pg_instance_server, an internal variable of role pg_instance"),
    # A read in a condition or a template of a play's task.
    ([{"hosts": "all", "name": "p", "tasks": [
        {"name": "t", "ansible.builtin.debug": {"msg": "{{ __sync_service_argv }}"},
         "when": "__ingres_streaming | bool"}]}],
     "uses __ingres_streaming, an internal variable of role ingres"),
    ("argv = values['__ingres_link_argv']", "uses __ingres_link_argv"),
])
def test_the_check_finds_reads_of_internals(doc, expected):
    found = internal_uses(doc)
    assert any(expected in p for p in found), found


def test_the_check_reads_the_role_calls_tests_build_in_python():
    source = """
tasks = [{"ansible.builtin.include_role": {"name": role, "tasks_from": "config.yml"}}
         for role in ("safe_copy", "sync_service")]
run_tasks([{"name": "x", "ansible.builtin.include_role": {"name": "pg_instance",
                                                          "tasks_from": "tls"}}])
run_tasks([{"include_role": {"name": "sync_service", "tasks_from": "service"}}])
"""
    calls = python_role_calls(source)
    assert [line for line, _task in calls] == [2, 4, 6]
    found = [p for _line, task in calls for p in problems([task])]
    assert len(found) == 2, found
    assert "templated role name '{{ not a literal }}'" in found[0]
    assert "pg_instance has no entry point 'tls'" in found[1]


def test_the_check_lets_declared_entry_points_and_own_internals_pass():
    fine = [{"name": "t", "ansible.builtin.include_role": {"name": "sync_service",
                                                           "tasks_from": "service"},
             "vars": {"sync_service_state": "stopped", "__upgrade_local": 1}},
            {"name": "u", "ansible.builtin.include_role": {"name": "sync_service"}}]
    assert problems(fine) == []
    # A role's own internals are its business.
    assert problems([{"name": "t", "ansible.builtin.set_fact": {"__ingres_x": 1}}],
                    own_role="ingres") == []
