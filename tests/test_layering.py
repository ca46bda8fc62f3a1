"""The layer rules of the package, checked on every import (including imports in functions).

The checker works on a mapping ``{module name: source text}``, so the tests below run it on
the real tree and on the real tree with forbidden imports added, proving it catches them.
Imports under ``if TYPE_CHECKING:`` count for the layer rules (annotations name what a
module depends on) but not for cycles (they never run). ``importlib.import_module`` with a
string (the registry's module paths) is not an import.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"posed": "posed", "posed.daemon": "daemon", "posed.engines": "engines",
          "posed.exporters": "exporters"}  # as setup.py maps them

FRAMEWORKS = frozenset({"torch", "torchvision", "timm", "tensorflow", "keras", "tf2onnx", "onnx",
                        "onnxruntime", "onnxconverter_common", "openvino"})
BACKENDS = ("posed.engines.pytorch", "posed.engines.tensorflow", "posed.engines.onnx",
            "posed.engines.openvino")
FRAMEWORK = "<framework>"
BACKEND = "<backend>"

# Layer -> (forbidden target, rule text); a target is a module prefix, FRAMEWORK or BACKEND.
RULES: dict[str, list[tuple[str, str]]] = {
    "daemon": [(FRAMEWORK, "daemon: no framework"), (BACKEND, "daemon: no backend"),
               ("posed.exporters", "daemon: no exporters"), ("posed.cli", "daemon: no cli"),
               ("posed.bench", "daemon: no bench")],
    "cli": [(FRAMEWORK, "cli: no framework"), (BACKEND, "cli: no backend"),
            ("posed.exporters", "cli: no exporters")],
    "bench": [(FRAMEWORK, "bench: no framework"), (BACKEND, "bench: no backend"),
              ("posed.exporters", "bench: no exporters")],
    "engines": [(FRAMEWORK, "engines: framework-free"), (BACKEND, "engines: no backend"),
                ("posed.exporters", "engines: no exporters"), ("posed.daemon", "engines: no daemon"),
                ("posed.cli", "engines: no cli"), ("posed.bench", "engines: no bench")],
    "backend": [("posed.daemon", "backend: no daemon"), ("posed.cli", "backend: no cli"),
                ("posed.bench", "backend: no bench"), ("posed.exporters", "backend: no exporters"),
                ("posed.engines.api", "backend: no facade"),
                ("posed.engines.compat", "backend: no facade")],
    "exporters": [("posed.engines.api", "exporters: no facade"),
                  ("posed.engines.compat", "exporters: no facade"),
                  ("posed.daemon", "exporters: no daemon"), ("posed.cli", "exporters: no cli"),
                  ("posed.bench", "exporters: no bench")],
}


# ----------------------------------------------------------------------------- the checker

def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def read_sources(root: Path = ROOT) -> dict[str, str]:
    """``{posed module name: source}`` of every module in the four layer folders."""
    sources = {}
    for package, folder in LAYERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            sources[name] = path.read_text()
    return sources


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for inner in node.body:
                hidden.update(id(n) for n in ast.walk(inner))
    return hidden


@functools.lru_cache(maxsize=None)
def _raw_imports(source: str) -> tuple[tuple[int, str, tuple[str, ...], bool], ...]:
    """(level, from-module or "" for ``import x``, names, runs) of every import statement."""
    tree = ast.parse(source)
    hidden = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        runs = id(node) not in hidden
        if isinstance(node, ast.Import):
            found += [(0, "", (alias.name,), runs) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(a.name for a in node.names), runs))
    return tuple(found)


def imports_of(module: str, source: str, modules: set[str]) -> list[tuple[str, bool]]:
    """Every module ``module`` imports, as (name, runs at import or call time).

    ``from package import name`` names the submodule ``package.name`` when it is one of
    ``modules``; relative imports are resolved against ``module``.
    """
    is_package = any(m.startswith(module + ".") for m in modules)
    found = []
    for level, base, names, runs in _raw_imports(source):
        if not base and not level:
            found.append((names[0], runs))
            continue
        if level:
            anchor = module.split(".")
            anchor = anchor[: len(anchor) - level + (1 if is_package else 0)]
            base = ".".join([*anchor, *([base] if base else [])])
        for name in names:
            full = f"{base}.{name}"
            found.append((full if full in modules else base, runs))
    return found


def layer_of(module: str) -> str | None:
    """The layer whose rules bind ``module`` (None: no rule, e.g. ``posed.errors``)."""
    if _within(module, "posed.daemon"):
        return "daemon"
    if _within(module, "posed.cli"):
        return "cli"
    if _within(module, "posed.bench"):
        return "bench"
    if _within(module, "posed.exporters"):
        return "exporters"
    if any(_within(module, b) for b in BACKENDS):
        return "backend"
    if _within(module, "posed.engines"):
        return "engines"
    return None


def _breaks(module: str, imported: str, target: str) -> bool:
    if target == FRAMEWORK:
        return imported.split(".")[0] in FRAMEWORKS
    if target == BACKEND:
        return any(_within(imported, b) for b in BACKENDS)
    return _within(imported, target)


def _own_backend(module: str) -> str | None:
    return next((b for b in BACKENDS if _within(module, b)), None)


def layer_violations(sources: dict[str, str]) -> list[str]:
    """``module -> imported (rule)`` for every import that breaks a layer rule."""
    modules = set(sources)
    out = []
    for module, source in sorted(sources.items()):
        layer = layer_of(module)
        if layer is None:
            continue
        for imported, _ in imports_of(module, source, modules):
            for target, rule in RULES[layer]:
                if _breaks(module, imported, target):
                    out.append(f"{module} -> {imported} ({rule})")
            own = _own_backend(module)
            other = _own_backend(imported)
            if own and other and other != own:
                out.append(f"{module} -> {imported} (backend: no other backend)")
    return sorted(set(out))


def _graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Runtime import edges between posed modules (to the closest module named)."""
    modules = set(sources)
    graph = {}
    for module, source in sources.items():
        edges = set()
        for imported, runs in imports_of(module, source, modules):
            while runs and imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if runs and imported and imported != module:
                edges.add(imported)
        graph[module] = edges
    return graph


def cycle_violations(sources: dict[str, str]) -> list[str]:
    """``module -> imported (import cycle)`` for every import edge that lies on a cycle.

    An edge lies on a cycle exactly when both ends are in one strongly connected component.
    """
    graph = _graph(sources)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    component: dict[str, int] = {}
    stack: list[str] = []
    counter = 0
    for root in sorted(graph):  # iterative Tarjan: the tree is deeper than Python's stack likes
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt not in component:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    component[member] = index[node]
                    if member == node:
                        break
    return sorted(f"{a} -> {b} (import cycle)" for a, edges in graph.items() for b in edges
                  if component[a] == component[b])


def violations(sources: dict[str, str]) -> list[str]:
    """Every layer and cycle violation, one line each."""
    return layer_violations(sources) + cycle_violations(sources)


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return read_sources()


def test_tree_follows_the_layer_rules(sources):
    found = layer_violations(sources)
    assert not found, "layer rules broken:\n" + "\n".join(found)


def test_tree_has_no_import_cycles(sources):
    found = cycle_violations(sources)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_sources_cover_every_layer(sources):
    assert {"posed", "posed.engines.api", "posed.engines.registry",
            "posed.exporters.torch"} <= set(sources)
    assert {"daemon", "cli", "bench", "engines", "backend", "exporters"} <= {
        layer_of(m) for m in sources}


FORBIDDEN = [
    pytest.param({"posed.daemon.x": "def f():\n    import torch\n"},
                 ["posed.daemon.x -> torch (daemon: no framework)"], id="daemon-framework"),
    pytest.param({"posed.daemon.x": "def f():\n    from posed.engines.pytorch import backend\n"},
                 ["posed.daemon.x -> posed.engines.pytorch.backend (daemon: no backend)"],
                 id="daemon-backend"),
    pytest.param({"posed.engines.onnx.backend": "\ndef _f():\n    from posed.engines import api\n"},
                 ["posed.engines.onnx.backend -> posed.engines.api (backend: no facade)"],
                 id="backend-api"),
    pytest.param({"posed.engines.pytorch.model": "\ndef _f():\n    from posed.engines import compat\n"},
                 ["posed.engines.pytorch.model -> posed.engines.compat (backend: no facade)"],
                 id="backend-compat"),
    pytest.param({"posed.engines.onnx.backend": "\nimport posed.engines.pytorch.model\n"},
                 ["posed.engines.onnx.backend -> posed.engines.pytorch.model "
                  "(backend: no other backend)"], id="backend-other-backend"),
    pytest.param({"posed.engines.video": "\ndef _f():\n    from posed.exporters import torch\n"},
                 ["posed.engines.video -> posed.exporters.torch (engines: no exporters)"],
                 id="engines-exporters"),
    pytest.param({"posed.engines.offline.analyze": "\ndef _f():\n    import timm.layers\n"},
                 ["posed.engines.offline.analyze -> timm.layers (engines: framework-free)"],
                 id="engines-framework"),
    pytest.param({"posed.exporters.torch": "\ndef _f():\n    from posed.engines.api import load_model\n"},
                 ["posed.exporters.torch -> posed.engines.api (exporters: no facade)"],
                 id="exporters-api"),
    pytest.param({"posed.cli": "\ndef _f():\n    import tensorflow\n"},
                 ["posed.cli -> tensorflow (cli: no framework)"], id="cli-framework"),
    pytest.param({"posed.engines.fake_a": "def f():\n    from posed.engines import fake_b\n",
                  "posed.engines.fake_b": "import posed.engines.fake_a\n"},
                 ["posed.engines.fake_a -> posed.engines.fake_b (import cycle)",
                  "posed.engines.fake_b -> posed.engines.fake_a (import cycle)"], id="cycle"),
    pytest.param({"posed.engines.fake": "", "posed.engines.fake.sub": "from .. import fake\n"},
                 ["posed.engines.fake.sub -> posed.engines.fake (import cycle)"],
                 id="relative-cycle-through-package-init"),
]


@pytest.mark.parametrize("added, expected", FORBIDDEN)
def test_checker_reports_added_forbidden_imports(sources, added, expected):
    """Each added import is reported, naming the module and what it imports."""
    changed = dict(sources)
    for module, text in added.items():
        changed[module] = changed.get(module, "") + text
    if "posed.engines.fake" in added:  # the package imports its submodule: fine on its own
        changed["posed.engines.fake"] = "from posed.engines.fake import sub\n"
    new = set(violations(changed)) - set(violations(sources))
    assert set(expected) <= new, f"not reported: {set(expected) - new}; reported: {sorted(new)}"


def test_package_importing_its_submodules_is_no_cycle(sources):
    changed = {**sources, "posed.engines.fake": "from posed.engines.fake import sub\n",
               "posed.engines.fake.sub": "from posed.engines import io\n"}
    assert set(violations(changed)) == set(violations(sources))


def test_registry_module_paths_are_not_imports(sources):
    changed = {**sources, "posed.engines.fake": "import importlib\n"
               "importlib.import_module('posed.exporters.torch')\n"}
    assert set(violations(changed)) == set(violations(sources))
