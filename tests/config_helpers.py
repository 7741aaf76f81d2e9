"""Shared by the configuration tests (tests/test_config_*.py): writing an INI file and an
environment without the caller's Taler variables.  The fixture is imported by the tests
that use it."""

import os

import pytest


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
