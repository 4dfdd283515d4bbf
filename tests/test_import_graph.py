"""esc50tf's modules import each other without a circle, and the light ones stay light.

The graph is built from the source with `ast`: every `import` and `from ...
import` naming an esc50tf module, at module level and inside functions alike
(a function-level import hides a circle from Python, not from a reader).
"""

import ast
import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules():
    mods = {}
    for path in sorted((ROOT / "esc50tf").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return mods


def _known(name, mods):
    """The module that `import name` runs last: name itself or its nearest package."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


@functools.lru_cache(maxsize=1)
def import_graph():
    """{module: set of esc50tf modules it imports anywhere in its source}."""
    mods = _modules()
    graph = {}
    for mod, (path, is_package) in mods.items():
        package = mod if is_package else mod.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, `level - 1` packages up
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule; `from mod import name` the module.
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in node.names]
            else:
                continue
            edges |= {t for t in (_known(n, mods) for n in names) if t and t != mod}
        graph[mod] = edges
    return graph


def circles(graph):
    """The strongly connected components of more than one module (Tarjan), as sets."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "esc50tf.report" in graph["esc50tf.evaluate"]  # module level
    assert "esc50tf.run_config" in graph["esc50tf.evaluate"]  # inside evaluate_run
    assert "esc50tf.data.splits" in graph["esc50tf.evaluate"]  # `from esc50tf.data import splits`
    assert "esc50tf.models.config" in graph["esc50tf.models"]  # a package's __init__
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_esc50tf_modules():
    graph = import_graph()
    assert "esc50tf.evaluate" not in graph["esc50tf.train"]
    assert "esc50tf.train" not in graph["esc50tf.evaluate"]
    found = circles(graph)
    assert found == [], found


def test_pretrained_weights_do_not_import_the_models_they_load_into():
    """models.panns loads converted weights (-> pretrained); the converter is handed the
    model it checks against, so only the `pretrained` command wires the two together."""
    graph = import_graph()
    assert {"esc50tf.pretrained.store", "esc50tf.pretrained.architectures"} <= graph[
        "esc50tf.models.panns"]
    for module in sorted(graph):
        if module.startswith("esc50tf.pretrained"):
            assert not [m for m in graph[module] if m.startswith("esc50tf.models")], module


# Modules that read and write configs and reports without TensorFlow or Keras.
LIGHT = ["esc50tf.config", "esc50tf.models.config", "esc50tf.presets", "esc50tf.data.splits",
         "esc50tf.run_config", "esc50tf.report", "esc50tf.compare",
         "esc50tf.pretrained.architectures"]


def test_config_and_report_modules_import_without_keras():
    code = ("import importlib, sys\n"
            f"for module in {LIGHT!r}:\n"
            "    importlib.import_module(module)\n"
            "    heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "    assert not heavy, (module, heavy)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_module_imports_another_modules_private_names():
    # `from esc50tf.x import _name` (or `x._name` through an imported module) would tie a
    # module to another's internals; shared pieces are public where they belong.
    found = []
    for path in sorted((ROOT / "esc50tf").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("esc50tf"):
                found += [f"{path.name}: from {node.module} import {a.name}"
                          for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
                imported |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.asname or a.name.split(".")[0] for a in node.names
                             if a.name.startswith("esc50tf")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in imported and node.value.id != "self"):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert found == []
