"""pg_subscription / pg_publication: the SQL for PostgreSQL 15, 16, 17 (and 18), pure Python.

The modules build their statements with plugins/module_utils/taler_pg_options.py from the
task's parameters and the connected server's server_version_num; these tests render them
without a server.  tests/test_modules_pg*.py run the modules against the real server here.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "plugins", "module_utils"))
import taler_pg_options as opts  # noqa: E402
from taler_pg_options import UnsupportedOption  # noqa: E402

PG15, PG16, PG17, PG18 = 150010, 160006, 170002, 180000


def text(composed):
    return composed.as_string(None)


def sub_params(**extra):
    p = dict(enabled=True, synchronous_commit="off", binary=False, streaming=False,
             disable_on_error=True, slot_name=None, origin=None, password_required=None,
             run_as_owner=None, failover=None)
    p.update(extra)
    return p


BASE_CREATE = ("CREATE SUBSCRIPTION \"ingres\" CONNECTION 'host=x dbname=e password=********' "
               "PUBLICATION \"taler\" WITH (enabled = true, synchronous_commit = 'off', "
               "binary = false, streaming = false, disable_on_error = true")


def create_sql(params, version):
    opts.check_subscription_options("ingres", params, version)
    want = opts.subscription_want(params)
    return text(opts.subscription_create_sql(
        "ingres", "host=x dbname=e password=********", ["taler"],
        opts.subscription_create_options(want, copy_data=True, create_slot=True)))


@pytest.mark.parametrize("version", [PG15, PG16, PG17, PG18])
def test_subscription_without_newer_options_is_the_same_everywhere(version):
    assert create_sql(sub_params(), version) == BASE_CREATE + ", copy_data = true, create_slot = true)"


def test_subscription_pg15_refuses_every_newer_option():
    for option, value in (("origin", "none"), ("password_required", False),
                          ("run_as_owner", True), ("failover", True)):
        with pytest.raises(UnsupportedOption) as exc:
            create_sql(sub_params(**{option: value}), PG15)
        assert f"option {option} needs PostgreSQL" in str(exc.value)
        assert "runs PostgreSQL 15.10 (server_version_num 150010)" in str(exc.value)
    with pytest.raises(UnsupportedOption, match=r"streaming=parallel needs PostgreSQL 16"):
        create_sql(sub_params(streaming="parallel"), PG15)


def test_subscription_pg16_options():
    sql = create_sql(sub_params(origin="none", password_required=False, run_as_owner=True,
                                streaming="parallel"), PG16)
    assert sql == ("CREATE SUBSCRIPTION \"ingres\" CONNECTION 'host=x dbname=e password=********' "
                   "PUBLICATION \"taler\" WITH (enabled = true, synchronous_commit = 'off', "
                   "binary = false, streaming = 'parallel', disable_on_error = true, "
                   "origin = 'none', password_required = false, run_as_owner = true, "
                   "copy_data = true, create_slot = true)")
    with pytest.raises(UnsupportedOption, match=r"option failover needs PostgreSQL 17 or later; "
                                                 r"the connected server runs PostgreSQL 16.6"):
        create_sql(sub_params(failover=True), PG16)


def test_subscription_pg17_failover_and_slot():
    sql = create_sql(sub_params(failover=True, slot_name="ingres_slot", origin="any"), PG17)
    assert sql == BASE_CREATE.replace("(enabled = true, ", "(enabled = true, slot_name = 'ingres_slot', ") + \
        ", origin = 'any', failover = true, copy_data = true, create_slot = true)"


def test_subscription_alter_only_what_changed_and_failover_needs_disabled():
    before = dict(enabled=True, slot_name="ingres", synchronous_commit="off", binary=False,
                  streaming=False, disable_on_error=True, origin="any", password_required=True,
                  run_as_owner=False, failover=False)
    want = opts.subscription_want(sub_params(origin="none", failover=True))
    changed = opts.subscription_changed_options(want, before)
    assert changed == {"origin": "none", "failover": True}
    assert text(opts.subscription_set_sql("ingres", changed)) == \
        "ALTER SUBSCRIPTION \"ingres\" SET (origin = 'none', failover = true)"
    assert "failover" in opts.SUBSCRIPTION_SET_WHEN_DISABLED
    # unset newer options are never compared, so a PostgreSQL 15 catalog (without them) works
    pg15_before = {k: v for k, v in before.items()
                   if k not in opts.SUBSCRIPTION_NEWER_OPTIONS}
    assert opts.subscription_changed_options(opts.subscription_want(sub_params()), pg15_before) == {}


@pytest.mark.parametrize("version,columns", [
    (PG15, []),
    (PG16, ["suborigin", "subpasswordrequired", "subrunasowner"]),
    (PG17, ["suborigin", "subpasswordrequired", "subrunasowner", "subfailover"]),
])
def test_subscription_catalog_query_per_version(version, columns):
    query = opts.subscription_catalog_query(version)
    for column in ("suborigin", "subpasswordrequired", "subrunasowner", "subfailover"):
        assert (f"s.{column}" in query) == (column in columns)
    row = {c: object() for c in columns}
    state = opts.subscription_state_from_row(row, version)
    assert sorted(state) == sorted(k for k, (_, c) in opts.SUBSCRIPTION_NEWER_OPTIONS.items()
                                   if c in columns)


@pytest.mark.parametrize("catalog,value", [("true", True), ("false", False), ("t", True),
                                           ("f", False), ("p", "parallel")])
def test_streaming_from_catalog_bool_in_15_char_from_16(catalog, value):
    assert opts.streaming_from_catalog(catalog) == value


@pytest.mark.parametrize("given,value", [(True, True), (False, False), ("True", True),
                                         ("false", False), ("on", True), ("parallel", "parallel"),
                                         ("Parallel", "parallel")])
def test_normalize_streaming(given, value):
    assert opts.normalize_streaming(given) == value


def test_normalize_streaming_rejects_other_values():
    with pytest.raises(ValueError, match="true, false or parallel"):
        opts.normalize_streaming("sometimes")


# -- publications ------------------------------------------------------------------------
PUB15 = ("CREATE PUBLICATION \"taler\" FOR TABLE \"exchange\".\"reserves\" WITH "
         "(publish = 'insert, update, delete, truncate', publish_via_partition_root = false)")


@pytest.mark.parametrize("version", [PG15, PG16, PG17, PG18])
def test_publication_without_newer_options_is_the_same_everywhere(version):
    p = {"publish_generated_columns": None}
    opts.check_publication_options("taler", p, version)
    options = opts.publication_options(["insert", "update", "delete", "truncate"], False)
    assert text(opts.publication_create_sql("taler", options,
                                            tables=[("exchange", "reserves")])) == PUB15


@pytest.mark.parametrize("version", [PG15, PG16, PG17])
def test_publication_generated_columns_refused_before_18(version):
    with pytest.raises(UnsupportedOption, match=r"publication 'taler': option "
                                                r"publish_generated_columns needs PostgreSQL 18"):
        opts.check_publication_options("taler", {"publish_generated_columns": "stored"}, version)


def test_publication_generated_columns_on_18():
    opts.check_publication_options("taler", {"publish_generated_columns": "stored"}, PG18)
    options = opts.publication_options(["insert"], True, "stored")
    assert text(opts.publication_create_sql("taler", options, all_tables=True)) == (
        "CREATE PUBLICATION \"taler\" FOR ALL TABLES WITH (publish = 'insert', "
        "publish_via_partition_root = true, publish_generated_columns = 'stored')")
    assert text(opts.publication_set_sql("taler", options)) == (
        "ALTER PUBLICATION \"taler\" SET (publish = 'insert', publish_via_partition_root = true, "
        "publish_generated_columns = 'stored')")
    assert "p.pubgencols_type" in opts.publication_catalog_query(PG18)
    assert "pubgencols" not in opts.publication_catalog_query(PG17)
    assert opts.publication_state_from_row({"pubgencols_type": "s"}, PG18) == \
        {"publish_generated_columns": "stored"}
    assert opts.publication_state_from_row({}, PG17) == {}


def test_major_text():
    assert opts.major_text(150010) == "15.10"
    assert opts.major_text(170000) == "17.0"
    assert opts.major_text(90624) == "9.6.24"


# -- DOCUMENTATION and argument spec stay in sync ------------------------------------------
class _Spec(Exception):
    pass


def _argument_spec(module_name):
    """The argument spec a module's main() builds (captured before it connects)."""
    import importlib.util
    import ansible.module_utils
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    utils = os.path.join(root, "plugins", "module_utils")
    if utils not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils)
    spec = importlib.util.spec_from_file_location(f"_doc_{module_name}",
                                                  os.path.join(root, "library", f"{module_name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def capture(argument_spec, **_kwargs):
        raise _Spec(argument_spec)
    mod.AnsibleModule = capture
    with pytest.raises(_Spec) as exc:
        mod.main()
    return mod, exc.value.args[0]


@pytest.mark.parametrize("module_name", ["pg_subscription", "pg_publication", "pg_server_bin"])
def test_documentation_matches_argument_spec(module_name):
    import yaml
    mod, argspec = _argument_spec(module_name)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    documented = set(doc["options"])
    if "taler_pg" in str(doc.get("extends_documentation_fragment", "")):
        documented |= {"login_host", "login_port", "login_user", "login_password", "login_db",
                       "ssl_mode", "ssl_rootcert", "connect_timeout"}
    assert documented == set(argspec)
    for name, option in doc["options"].items():
        spec = argspec[name]
        assert option.get("type", "str") == spec.get("type", "str"), name
        assert option.get("default") == spec.get("default"), name
        assert option.get("choices") == spec.get("choices"), name
