"""The engine's layers as the tree shows them (issue 19): no import cycle between its
modules, no production module importing the simulator, and no module that grew past
what one reads in a sitting."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "plugins", "module_utils")
ENGINE = os.path.join(ROOT, "taler_ops")
# The simulator's own front-end is the only way into sim/ from outside it.
SIM_FRONT_ENDS = {"taler_ops.cli.generate"}
MAX_LINES = 500


def modules():
    """{dotted name: path} of every engine module."""
    found = {}
    for dirpath, _dirs, files in os.walk(ENGINE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports(name, path, known):
    """The engine modules ``name`` imports, at any depth of its code (function-local too)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        out.update(c for c in candidates if c in known and c != name)
    return out


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_import_cycle():
    edges = graph()
    # A package's __init__ that re-exports its modules is not a cycle with them.
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_production_code_never_imports_the_simulator():
    offenders = sorted(
        f"{m} imports {t}" for m, ts in graph().items() for t in ts
        if t.startswith("taler_ops.sim") and not m.startswith("taler_ops.sim")
        and m not in SIM_FRONT_ENDS)
    assert not offenders, offenders


def test_every_layer_is_a_package_of_the_tree():
    layers = {m.split(".")[1] for m in modules() if m.count(".") >= 2}
    assert layers == {"audit", "cli", "crypto", "ingres", "monitor", "schema", "sim", "sync"}


def test_no_engine_module_over_the_size_limit():
    long = {m: n for m, p in modules().items() if (n := sum(1 for _ in open(p))) > MAX_LINES}
    assert not long, long
