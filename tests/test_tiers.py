"""The test tiers stay what conftest says they are."""

import ast
import os

from conftest import SLOW_FILES, SLOW_TESTS

TESTS = os.path.dirname(os.path.abspath(__file__))


def _test_functions(path):
    with open(path) as fh:
        tree = ast.parse(fh.read())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_slow_file_and_test_named_in_conftest_still_exists():
    # A renamed test would silently fall back into the fast tier.
    missing = [name for name in SLOW_FILES if not os.path.exists(os.path.join(TESTS, name))]
    for entry in SLOW_TESTS:
        file, func = entry.split("::")
        path = os.path.join(TESTS, file)
        if not os.path.exists(path) or func not in _test_functions(path):
            missing.append(entry)
    assert missing == []
