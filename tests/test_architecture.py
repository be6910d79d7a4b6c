"""DESIGN.md "Layers", executable: the import graph of ``src/safepredict`` obeys the layers.

Every module under ``src/safepredict`` is parsed with :mod:`ast` (imports at module level,
inside functions, and under ``if TYPE_CHECKING:`` alike; ``importlib.import_module`` with a
literal name counts as an import too), and the resulting graph is checked against
``LAYERS`` below:

- a module imports only modules of its own layer or lower ("nothing below imports L4");
- layer-2 stages import no other stage and no writer; layer-2 writers import no stage
  and only the writers of their own subpackage;
- each heavy dependency (mapie, shap, structlog) and each optional extra is imported
  in its one home;
- there are no import cycles and no cross-module imports of private names
  (``from x import _y``) beyond the short allowlists below, each with its reason;
- the deprecated alias modules only forward to their new home.

A failure names the file, the line, the import and the rule it breaks. The last tests run
the same checker on a scratch copy of the package with a deliberate back-import and cycle,
so a checker that stopped seeing imports would fail here.
"""

from __future__ import annotations

import ast
import fnmatch
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "safepredict"

# Roles: "base" (L0), "core" (L1), "stage" and "writer" (L2), "app" (L3), "edge" (L4).
LAYERS: dict[str, tuple[int, str]] = {
    # L0: primitives with one home each; import nothing but other L0 modules.
    "safepredict._binomial": (0, "base"),
    "safepredict._calibration_file": (0, "base"),
    "safepredict._cluster": (0, "base"),
    "safepredict._deprecation": (0, "base"),
    "safepredict._extras": (0, "base"),
    "safepredict._frames": (0, "base"),
    "safepredict._hashing": (0, "base"),
    "safepredict._ids": (0, "base"),
    "safepredict._jsonl": (0, "base"),
    "safepredict._model_fingerprint": (0, "base"),
    "safepredict._state": (0, "base"),
    "safepredict._stats": (0, "base"),
    "safepredict._typing": (0, "base"),
    "safepredict._validation": (0, "base"),
    "safepredict._version": (0, "base"),
    "safepredict.exceptions": (0, "base"),
    # conformal OOD detectors over numeric arrays: the guards stage and the text/array
    # guards both build on them, so they sit below every stage.
    "safepredict.ood": (0, "base"),
    "safepredict.ood.*": (0, "base"),  # shared scores, centroid and kNN detectors
    "safepredict.reasons": (0, "base"),
    # L1: configuration and the result types.
    "safepredict.config": (1, "core"),
    "safepredict.guard_config": (1, "core"),
    "safepredict.tier_config": (1, "core"),
    "safepredict.decisions": (1, "core"),
    # L2 pure stages of the decide pipeline: none imports another.
    "safepredict.adapters": (2, "stage"),
    "safepredict.adaptive": (2, "stage"),
    "safepredict.conformal": (2, "stage"),
    "safepredict.conformal._counts": (2, "stage"),
    "safepredict.conformal._mapie": (2, "stage"),
    "safepredict.conformal.classification": (2, "stage"),
    "safepredict.conformal.conditional": (2, "stage"),
    "safepredict.conformal.pvalues": (2, "stage"),
    "safepredict.conformal.regression": (2, "stage"),
    "safepredict.explain": (2, "stage"),
    "safepredict.explain.*": (2, "stage"),  # token explanations of text pipelines
    "safepredict.guards": (2, "stage"),
    "safepredict.guards.*": (2, "stage"),  # one guard set per modality, shared helpers
    "safepredict.inputs": (2, "stage"),
    "safepredict.merge": (2, "stage"),
    "safepredict.model": (2, "stage"),
    "safepredict.tiers": (2, "stage"),
    # one stage split by job; its modules import each other, never another stage.
    "safepredict.tiers.assign": (2, "stage"),
    "safepredict.tiers.calibrate": (2, "stage"),
    "safepredict.tiers.certify": (2, "stage"),
    "safepredict.tiers.conditions": (2, "stage"),
    "safepredict.tiers.planner": (2, "stage"),
    "safepredict.tiers.state": (2, "stage"),
    # L2 writers: turn decisions into events and review cases; never import a stage.
    "safepredict.monitoring": (2, "writer"),
    "safepredict.monitoring.events": (2, "writer"),
    "safepredict.monitoring._event_fields": (2, "writer"),
    "safepredict.monitoring._event_files": (2, "writer"),
    "safepredict.monitoring._event_json": (2, "writer"),
    "safepredict.monitoring._event_row": (2, "writer"),
    "safepredict.monitoring._snapshot": (2, "writer"),
    "safepredict.monitoring.columnar": (2, "writer"),
    "safepredict.monitoring.feature_drift": (2, "writer"),
    "safepredict.monitoring.tier_health": (2, "writer"),
    "safepredict.review": (2, "writer"),
    "safepredict.review._sqlite": (2, "writer"),
    "safepredict.review._codec": (2, "writer"),
    "safepredict.review._core": (2, "writer"),
    "safepredict.review._postgres": (2, "writer"),
    "safepredict.review._reads": (2, "writer"),
    "safepredict.review._routing": (2, "writer"),
    "safepredict.review.agreement": (2, "writer"),
    "safepredict.review.priority": (2, "writer"),
    "safepredict.review.cases": (2, "writer"),
    "safepredict.review.outcomes": (2, "writer"),
    "safepredict.review.feedback": (2, "writer"),
    "safepredict.review.queue": (2, "writer"),
    "safepredict.review.router": (2, "writer"),
    "safepredict.review.sinks": (2, "writer"),
    # L3: the facade and what composes the stages.
    "safepredict": (3, "app"),
    "safepredict.calibration": (3, "app"),
    "safepredict.evaluation": (3, "app"),
    "safepredict.evaluation._costs": (3, "app"),
    "safepredict.evaluation._curves": (3, "app"),
    "safepredict.evaluation._data": (3, "app"),
    "safepredict.evaluation._evaluate": (3, "app"),
    "safepredict.evaluation._policies": (3, "app"),
    "safepredict.evaluation._replay": (3, "app"),
    "safepredict.evaluation.recommend": (3, "app"),
    "safepredict.health": (3, "app"),
    "safepredict.lifecycle": (3, "app"),
    "safepredict.persistence": (3, "app"),
    "safepredict._load_checks": (3, "app"),
    "safepredict.pipeline": (3, "app"),
    "safepredict.stages": (3, "app"),
    "safepredict.predictor": (3, "app"),
    "safepredict.shift": (3, "app"),
    "safepredict.shift.*": (3, "app"),
    # L4: readers, renderers, servers and entry points; nothing below imports them.
    "safepredict.__main__": (4, "edge"),
    "safepredict.cli": (4, "edge"),
    "safepredict.cli.*": (4, "edge"),
    "safepredict.evaluation.explorer": (4, "edge"),
    "safepredict.evaluation.plots": (4, "edge"),
    "safepredict.evaluation.report": (4, "edge"),
    "safepredict.integrations": (4, "edge"),
    "safepredict.integrations.*": (4, "edge"),
    "safepredict.monitoring.html": (4, "edge"),
    "safepredict.monitoring.aggregate": (4, "edge"),
    "safepredict.monitoring.fast_blocks": (4, "edge"),
    "safepredict.monitoring.journal": (4, "edge"),
    "safepredict.monitoring.parallel": (4, "edge"),
    "safepredict.monitoring.partials": (4, "edge"),
    "safepredict.monitoring.monitor": (4, "edge"),
    "safepredict.monitoring.reading": (4, "edge"),
    "safepredict.monitoring.realized": (4, "edge"),
    "safepredict.monitoring.windows": (4, "edge"),
    "safepredict.monitoring.prometheus": (4, "edge"),
    "safepredict.monitoring.shift_advice": (4, "edge"),
    "safepredict.review.console": (4, "edge"),
}

# Modules that moved in 0.2 and only forward (``moved_module``) to their new home.
DEPRECATED_ALIASES = frozenset(
    {
        "safepredict.console",
        "safepredict.events",
        "safepredict.monitor",
        "safepredict.monitor_html",
        "safepredict.prometheus",
        "safepredict.reports",
        "safepredict.routing",
    }
)

# Each heavy dependency has exactly one home (DESIGN.md "Layers").
HEAVY_HOMES = {
    "mapie": "safepredict.conformal._mapie",
    "shap": "safepredict.explain.backend",
    "structlog": "safepredict.monitoring.events",
}

# Optional extras are imported only where their feature lives (patterns allowed).
OPTIONAL_HOMES = {
    "dask": ("safepredict.integrations.dask",),
    "distributed": ("safepredict.integrations.dask",),
    "fastapi": ("safepredict.review.console",),
    "jinja2": ("safepredict.review.console",),
    "joblib": ("safepredict.cli.*",),
    "matplotlib": (
        "safepredict.evaluation.plots",
        "safepredict.evaluation.report",
        "safepredict.monitoring.html",
    ),
    "mlflow": ("safepredict.integrations.mlflow",),
    "msgspec": ("safepredict.monitoring.fast_blocks",),
    "prometheus_client": ("safepredict.monitoring.prometheus",),
    "psycopg": ("safepredict.review._postgres",),
    "pyarrow": ("safepredict.monitoring.columnar",),
    "pyspark": ("safepredict.integrations.spark",),
    "rich": ("safepredict.cli.*",),
    "skops": ("safepredict.persistence",),
    "starlette": ("safepredict.review.console",),
    "typer": ("safepredict.cli", "safepredict.cli.*"),
    "uvicorn": ("safepredict.cli.*",),
}

# Private names imported across modules, each with its reason. Keep this short.
PRIVATE_ALLOWED: dict[tuple[str, str, str], str] = {}

# Dynamic imports by a non-literal name, each with its reason.
DYNAMIC_ALLOWED: dict[str, str] = {
    "safepredict._deprecation": "moved_module forwards an alias module to its new home",
    "safepredict._extras": "require() imports an optional third-party package by name only to "
    "say which extra installs it when it is missing; it never imports safepredict modules",
}

# Import cycles (as sorted member tuples) still present, each with its reason.
CYCLES_ALLOWED: dict[tuple[str, ...], str] = {}

# Upward imports kept as deprecated shims, each with its reason (importer, imported).
UPWARD_ALLOWED: dict[tuple[str, str], str] = {
    (
        "safepredict.decisions",
        "safepredict.explain",
    ): "Explanation.to_shap is a deprecated shim (0.2) for explain.to_shap, imported lazily",
}

ROLE_NAMES = {
    "base": "L0",
    "core": "L1",
    "stage": "L2 stage",
    "writer": "L2 writer",
    "app": "L3",
    "edge": "L4",
}


@dataclass(frozen=True)
class Import:
    """One import statement's target as seen from ``module``."""

    module: str
    target: str  # a safepredict module, or a third-party top-level package
    names: tuple[str, ...]  # names taken with ``from target import ...``
    path: str
    line: int
    kind: str  # "module level", "inside a function", "TYPE_CHECKING", "importlib"

    def where(self) -> str:
        shown = (
            f"from {self.target} import {', '.join(self.names)}"
            if self.names
            else (f"import {self.target}")
        )
        return f"{self.path}:{self.line} `{shown}` ({self.kind})"


@dataclass
class Graph:
    root: Path
    modules: dict[str, Path]
    imports: list[Import]
    dynamic: list[tuple[str, str, int]]  # (module, path, line) of non-literal dynamic imports


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _walk(tree: ast.AST) -> Iterable[tuple[ast.AST, str]]:
    """Every statement with how it is reached: module level, in a function, TYPE_CHECKING."""
    stack: list[tuple[ast.AST, str]] = [(tree, "module level")]
    while stack:
        node, kind = stack.pop()
        yield node, kind
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend((sub, "TYPE_CHECKING") for sub in node.body)
            stack.extend((sub, kind) for sub in node.orelse)
            continue
        inner = kind
        if kind == "module level" and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = "inside a function"
        for block in _BLOCKS:
            stack.extend((sub, inner) for sub in getattr(node, block, ()))


_PARSED: dict[str, ast.Module] = {}


def _parse(text: str, path: Path) -> ast.Module:
    """Parse once per distinct source text (the scratch copies reuse the real trees)."""
    if text not in _PARSED:
        _PARSED[text] = ast.parse(text, filename=str(path))
    return _PARSED[text]


def build_graph(root: Path) -> Graph:
    """Parse every module under ``root`` (the ``safepredict`` package directory)."""
    modules = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    imports: list[Import] = []
    dynamic: list[tuple[str, str, int]] = []
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        shown = str(path.relative_to(root.parent.parent))
        text = path.read_text(encoding="utf-8")
        tree = _parse(text, path)
        nodes = list(_walk(tree))
        if "import_module" in text or "__import__" in text:  # calls hide in expressions
            nodes += [(n, "importlib") for n in ast.walk(tree) if isinstance(n, ast.Call)]
        for node, kind in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, modules)
                    imports.append(Import(name, target, (), shown, node.lineno, kind))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                plain: list[str] = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:  # ``from package import submodule``
                        imports.append(Import(name, sub, (), shown, node.lineno, kind))
                    else:
                        plain.append(alias.name)
                if plain or not node.names:
                    target = _resolve(base, modules)
                    imports.append(Import(name, target, tuple(plain), shown, node.lineno, kind))
            elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    target = _resolve(arg.value, modules)
                    imports.append(Import(name, target, (), shown, node.lineno, "importlib"))
                else:
                    dynamic.append((name, shown, node.lineno))
    return Graph(root, modules, imports, dynamic)


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


def _resolve(dotted: str, modules: Mapping[str, Path]) -> str:
    """The longest known module prefix of ``dotted``, or its top-level package if external."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return parts[0]


def layer_of(module: str) -> tuple[int, str] | None:
    if module in LAYERS:
        return LAYERS[module]
    for pattern, layer in LAYERS.items():
        if "*" in pattern and fnmatch.fnmatchcase(module, pattern):
            return layer
    return None


def _matches(module: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(module, p) for p in patterns)


def _label(module: str) -> str:
    layer = layer_of(module)
    return f"{module} ({ROLE_NAMES[layer[1]]})" if layer else module


def _internal(graph: Graph) -> list[Import]:
    return [
        i
        for i in graph.imports
        if i.target in graph.modules and i.target != i.module and i.module not in DEPRECATED_ALIASES
    ]


# ----------------------------------------------------------------------------- rules
def unassigned(graph: Graph) -> list[str]:
    return [
        f"{m} ({p.relative_to(graph.root.parent.parent)}) has no layer: add it to LAYERS in "
        'tests/test_architecture.py and to the diagram in DESIGN.md "Layers" and '
        "docs/architecture.md."
        for m, p in graph.modules.items()
        if m not in DEPRECATED_ALIASES and layer_of(m) is None
    ]


def layer_violations(graph: Graph) -> list[str]:
    out: list[str] = []
    for imp in _internal(graph):
        src, dst = layer_of(imp.module), layer_of(imp.target)
        if src is None or dst is None:
            continue  # reported by unassigned()
        if (imp.module, imp.target) in UPWARD_ALLOWED:
            continue
        (src_level, src_role), (dst_level, dst_role) = src, dst
        rule = ""
        if dst_level > src_level:
            rule = (
                "a module imports only its own layer or lower; nothing below L4 imports L4"
                if dst_level == 4
                else "a module imports only its own layer or lower"
            )
        elif (
            src_role == "stage"
            and dst_role == "stage"
            and not _same_subpackage(imp.module, imp.target)  # one stage split by job
        ):
            rule = "stages are independent: no stage imports another (the pipeline composes them)"
        elif src_role == "stage" and dst_role == "writer":
            rule = "stages are pure: they return values and never import a writer"
        elif src_role == "writer" and dst_role == "stage":
            rule = "writers import L0-L1 only, never a stage"
        elif (
            src_role == "writer"
            and dst_role == "writer"
            and not _same_subpackage(imp.module, imp.target)
        ):
            rule = "writers import L0-L1 and their own subpackage only"
        if rule:
            out.append(
                f"{imp.where()}: {_label(imp.module)} imports {_label(imp.target)} — {rule} "
                '(DESIGN.md "Layers").'
            )
    return out


def _same_subpackage(a: str, b: str) -> bool:
    """Both in ``safepredict.review`` (or both in ``safepredict.monitoring``)."""
    return a.split(".")[:2] == b.split(".")[:2]


def dependency_homes(graph: Graph) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for imp in graph.imports:
        if imp.target in graph.modules:
            continue
        if imp.target in HEAVY_HOMES:
            seen.add(imp.target)
            home = HEAVY_HOMES[imp.target]
            if imp.module != home:
                out.append(
                    f"{imp.where()}: {imp.target} is a heavy dependency with one home, {home}; "
                    f"call {home} instead of importing {imp.target} in {imp.module}."
                )
        elif imp.target in OPTIONAL_HOMES and not _matches(imp.module, OPTIONAL_HOMES[imp.target]):
            out.append(
                f"{imp.where()}: {imp.target} is an optional extra imported only in "
                f"{', '.join(OPTIONAL_HOMES[imp.target])}; move the code that needs it there."
            )
    for dep, home in HEAVY_HOMES.items():
        if dep not in seen:
            out.append(f"{home} no longer imports {dep}: update HEAVY_HOMES to its new home.")
    return out


def cycles(graph: Graph) -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan)."""
    edges: dict[str, set[str]] = {m: set() for m in graph.modules}
    for imp in _internal(graph):
        if (imp.module, imp.target) not in UPWARD_ALLOWED:  # deprecated shims, imported lazily
            edges[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    return found


def cycle_violations(graph: Graph) -> list[str]:
    out = []
    for component in cycles(graph):
        if component in CYCLES_ALLOWED:
            continue
        members = set(component)
        links = [
            i.where() + f": {i.module} -> {i.target}"
            for i in _internal(graph)
            if i.module in members and i.target in members
        ]
        out.append(
            f"import cycle {' <-> '.join(component)}; break one of these imports "
            "(move the shared code down a layer):\n    " + "\n    ".join(links)
        )
    return out


def private_imports(graph: Graph) -> list[tuple[Import, str]]:
    return [
        (imp, name)
        for imp in _internal(graph)
        for name in imp.names
        if name.startswith("_") and not name.startswith("__")
    ]


def private_violations(graph: Graph) -> list[str]:
    return [
        f"{imp.where()}: {imp.module} imports the private name {name} from {imp.target} — make "
        f"it public in {imp.target} (or in the one module both should import), or add "
        "(importer, module, name) with a reason to PRIVATE_ALLOWED."
        for imp, name in private_imports(graph)
        if (imp.module, imp.target, name) not in PRIVATE_ALLOWED
    ]


def dynamic_violations(graph: Graph) -> list[str]:
    return [
        f"{path}:{line}: {module} imports a module by a computed name, which hides an edge "
        "from this test; import it statically (or lazily, inside the function)."
        for module, path, line in graph.dynamic
        if module not in DYNAMIC_ALLOWED
    ]


def alias_violations(graph: Graph) -> list[str]:
    out = []
    for module in sorted(DEPRECATED_ALIASES & set(graph.modules)):
        targets = {i.target for i in graph.imports if i.module == module}
        if targets != {"safepredict._deprecation"}:
            out.append(
                f"{module} is a deprecated alias and must only forward with moved_module; "
                f"it imports {sorted(targets)}."
            )
    return out


def all_violations(graph: Graph) -> list[str]:
    return [
        *unassigned(graph),
        *layer_violations(graph),
        *dependency_homes(graph),
        *cycle_violations(graph),
        *private_violations(graph),
        *dynamic_violations(graph),
        *alias_violations(graph),
    ]


def _report(violations: list[str]) -> str:
    return "\n" + "\n".join(f"- {v}" for v in violations)


# ----------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(SRC)


def test_the_graph_sees_every_kind_of_import(graph: Graph) -> None:
    kinds = {i.kind for i in graph.imports}
    assert {"module level", "inside a function", "TYPE_CHECKING"} <= kinds
    assert len(graph.modules) > 40


def test_every_module_has_a_layer(graph: Graph) -> None:
    violations = unassigned(graph)
    assert not violations, _report(violations)


def test_imports_follow_the_layers(graph: Graph) -> None:
    violations = layer_violations(graph)
    assert not violations, _report(violations)


def test_each_heavy_dependency_and_extra_has_one_home(graph: Graph) -> None:
    violations = dependency_homes(graph)
    assert not violations, _report(violations)


def test_no_import_cycles(graph: Graph) -> None:
    violations = cycle_violations(graph)
    assert not violations, _report(violations)


def test_no_cross_module_private_imports(graph: Graph) -> None:
    violations = private_violations(graph)
    assert not violations, _report(violations)


def test_no_hidden_dynamic_imports(graph: Graph) -> None:
    violations = dynamic_violations(graph)
    assert not violations, _report(violations)


def test_deprecated_aliases_only_forward(graph: Graph) -> None:
    violations = alias_violations(graph)
    assert not violations, _report(violations)


def test_allowlists_are_current(graph: Graph) -> None:
    """An allowlist entry that no longer matches anything must be deleted."""
    stale = [f"CYCLES_ALLOWED {c}" for c in CYCLES_ALLOWED if c not in cycles(graph)]
    used_private = {(i.module, i.target, n) for i, n in private_imports(graph)}
    stale += [f"PRIVATE_ALLOWED {k}" for k in PRIVATE_ALLOWED if k not in used_private]
    edges = {(i.module, i.target) for i in _internal(graph)}
    stale += [f"UPWARD_ALLOWED {k}" for k in UPWARD_ALLOWED if k not in edges]
    dynamic = {d[0] for d in graph.dynamic}
    stale += [f"DYNAMIC_ALLOWED {k}" for k in DYNAMIC_ALLOWED if k not in dynamic]
    assert not stale, "remove these stale entries from tests/test_architecture.py:" + _report(stale)


# ------------------------------------------------------------ negative controls
@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the package to break on purpose."""
    root = tmp_path / "src" / "safepredict"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__", "*.html", "*.json"))
    return root


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_a_back_import_into_l4_is_caught(scratch: Path) -> None:
    _append(
        scratch / "_stats.py",
        "\n\ndef _late() -> None:\n    from safepredict.monitoring.monitor import monitor\n",
    )
    violations = all_violations(build_graph(scratch))
    assert len(violations) >= 2, violations
    assert any(
        "_stats.py" in v
        and "safepredict._stats (L0) imports safepredict.monitoring.monitor (L4)" in v
        and "nothing below L4 imports L4" in v
        and "(inside a function)" in v
        for v in violations
    ), violations
    assert any(v.startswith("import cycle") and "safepredict._stats" in v for v in violations)


def test_stage_coupling_private_names_and_heavy_imports_are_caught(scratch: Path) -> None:
    _append(
        scratch / "guards" / "tabular.py",
        "\nif TYPE_CHECKING:\n    from safepredict.tiers import TierInputs\n"
        "from safepredict.review.queue import _secret\nimport shap\n",
    )
    (scratch / "brand_new.py").write_text('"""Unplaced."""\n', encoding="utf-8")
    violations = all_violations(build_graph(scratch))
    text = "\n".join(violations)
    assert "no stage imports another" in text
    assert "(TYPE_CHECKING)" in text
    assert "stages are pure" in text
    assert "private name _secret" in text
    assert "shap is a heavy dependency with one home, safepredict.explain" in text
    assert "safepredict.brand_new (src/safepredict/brand_new.py) has no layer" in text
