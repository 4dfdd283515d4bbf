"""The inner loop (`pytest -m "not slow"`) imports every module of esc50tf.

Read from the sources with `ast`: the esc50tf modules that each test file
imports (at module level, in its fixtures and helpers, and in its tests that are
not marked slow) or runs with `python -m`, and everything those modules import
in turn when they load (their module-level imports). Three ways of loading a
module by name are followed too: a package's lazy names (`_LAZY`, PEP 562),
the model registry's family modules (`FAMILIES`), and the modules that
`esc50tf.cli.main(["COMMAND", ...])` imports to run the command (its group
module's `Command` entry names its `run`). A test file whose tests are all
slow counts for nothing.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules():
    """{dotted name: path} of every esc50tf module and package."""
    mods = {}
    for path in sorted((ROOT / "esc50tf").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _absolute(node, package):
    if node.level == 0:
        return node.module
    base = package.rsplit(".", node.level - 1)[0]
    return f"{base}.{node.module}" if node.module else base


def _load_imports(mods):
    """{module: esc50tf modules its module-level statements import}: what loading it loads."""
    graph = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        graph[mod] = set()
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                graph[mod] |= {m for sub in ast.walk(node) for m in _imported(sub, mods, package)}
    families = _constant(mods["esc50tf.models.registry"], "FAMILIES")
    graph["esc50tf.models.registry"] |= {f"esc50tf.models.{f}" for f in families}
    return graph


def _constant(path, name):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} has no {name}")


def _function_imports(tree, name, mods, package):
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return {m for node in ast.walk(func) for m in _imported(node, mods, package)}


def _command_modules(mods):
    """{command: esc50tf modules `cli.main([command, ...])` imports to run it}.

    Each group module of `esc50tf.cli` lists its commands as `Command(name, add, run, ...)`;
    a command without `run` (its subcommands set handlers) counts every function of its module.
    """
    init = ast.parse(mods["esc50tf.cli"].read_text())
    common = (_function_imports(init, "main", mods, "esc50tf")
              | _function_imports(init, "commands", mods, "esc50tf"))
    commands = {}
    for mod, path in mods.items():
        if not mod.startswith("esc50tf.cli."):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Command" \
                    and len(node.args) >= 3:
                run = node.args[2]
                handlers = ([run.id] if isinstance(run, ast.Name) else
                            [n.name for n in tree.body if isinstance(n, ast.FunctionDef)])
                found = common | {mod}
                for handler in handlers:
                    found |= _function_imports(tree, handler, mods, "esc50tf")
                commands[node.args[0].value] = found
    return commands


def _lazy_names(mods):
    """{(package, name): submodule} of the packages that load names on first access
    (a module-level `_LAZY = {name: submodule}`, PEP 562)."""
    found = {}
    for mod, path in mods.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_LAZY":
                for key, value in zip(node.value.keys, node.value.values):
                    found[(mod, key.value)] = f"{mod}.{value.value}"
    return found


def _imported(node, mods, package="", lazy=None):
    """esc50tf modules an import statement loads (a package's parents included)."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        source = _absolute(node, package)
        names = [source] + [(lazy or {}).get((source, a.name), f"{source}.{a.name}")
                            for a in node.names]
    found = set()
    for name in names:
        parts = name.split(".") if name else []
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found & set(mods)


def _is_slow(func):
    for deco in func.decorator_list:
        if "mark.slow" in ast.unparse(deco):
            return True
    return False


def _reached(tree, mods, lazy=None, commands=None):
    """esc50tf modules a test file's fast code imports or runs."""
    module_slow = any(isinstance(n, ast.Assign) and "mark.slow" in ast.unparse(n.value)
                      and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                      for n in tree.body)
    tests = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
             and n.name.lower().startswith("test")]
    fast = [f for f in tests if not (module_slow or _is_slow(f))]
    if not fast:
        return set()
    skipped = {id(n) for f in tests if f not in fast for n in ast.walk(f)}
    packages = {}  # local name -> the esc50tf package it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in mods:
            for a in node.names:
                if f"{node.module}.{a.name}" in mods:
                    packages.setdefault(a.asname or a.name, set()).add(f"{node.module}.{a.name}")
    reached = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        reached |= _imported(node, mods, lazy=lazy)
        if isinstance(node, (ast.List, ast.Tuple, ast.Call)):
            items = node.args if isinstance(node, ast.Call) else node.elts
            values = [getattr(i, "value", None) for i in items]
            for flag, name in zip(values, values[1:]):
                if flag == "-m" and name in mods:  # python -m esc50tf[.cli]
                    reached.add(f"{name}.__main__" if f"{name}.__main__" in mods else name)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "main" \
                and node.args and isinstance(node.args[0], ast.List) and node.args[0].elts:
            command = getattr(node.args[0].elts[0], "value", None)  # main(["train", ...])
            reached |= (commands or {}).get(command, set())
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            for package in packages.get(node.value.id, ()):  # frontend.MelSpectrogram
                reached.add((lazy or {}).get((package, node.attr), package))
    return reached


def inner_loop_modules():
    """(every esc50tf module, the ones the fast tests load)."""
    mods = _modules()
    graph, lazy, commands = _load_imports(mods), _lazy_names(mods), _command_modules(mods)
    todo = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        todo |= _reached(ast.parse(path.read_text()), mods, lazy, commands)
    loaded = set()
    while todo:
        mod = todo.pop()
        if mod not in loaded:
            loaded.add(mod)
            todo |= graph[mod]
    return set(mods), loaded


def test_the_fast_tests_reach_every_module():
    mods, reached = inner_loop_modules()
    missing = sorted(set(mods) - reached)
    assert not missing, f"no test outside `-m slow` imports or runs: {missing}"


def test_a_file_of_slow_tests_counts_for_nothing():
    mods = _modules()
    slow = ast.parse("import pytest\nfrom esc50tf import cli\n\n@pytest.mark.slow\n"
                     "def test_a():\n    from esc50tf import demo\n")
    assert _reached(slow, mods) == set()
    mixed = ast.parse("import pytest\nfrom esc50tf import cli\n\n@pytest.mark.slow\n"
                      "def test_a():\n    from esc50tf import demo\n\ndef test_b():\n"
                      "    run([sys.executable, '-m', 'esc50tf'])\n")
    assert _reached(mixed, mods) == {"esc50tf", "esc50tf.cli", "esc50tf.__main__"}
