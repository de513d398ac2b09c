"""The layers of pyrelctl/ and bench/, checked from the code's own imports (issue 29).

pyrelctl/__init__.py's docstring says what each layer holds; :data:`LAYERS`
below puts every module in one, lowest first. An import may point down or
stay within its layer, never up, and no chain of imports may lead back to
the module it started from. Every import counts: at module level, inside a
function (a lazy import is a dependency all the same) and under ``if
TYPE_CHECKING:`` (so is a type). The imports are read with :mod:`ast`,
nothing is imported.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pyrelctl", "bench")

#: Every module of pyrelctl/ and bench/, by layer, lowest first. A module may
#: import from its own layer and the ones above it in this table, never from
#: one below it in this table. A package stands for its ``__init__.py``.
LAYERS: dict[str, tuple[str, ...]] = {
    "core": (
        "pyrelctl",
        "pyrelctl.defaults",
        "pyrelctl.durations",
        "pyrelctl.errors",
        "pyrelctl.names",
        "pyrelctl.run",
        "pyrelctl.terminal",
    ),
    "release": (
        "pyrelctl.archive",
        "pyrelctl.checksums",
        "pyrelctl.dirartifact",
        "pyrelctl.manifest",
        "pyrelctl.mixlogger",
        "pyrelctl.openartifact",
        "pyrelctl.procs",
        "pyrelctl.procs.calendar",
        "pyrelctl.procs.manifest",
        "pyrelctl.procs.values",
        "pyrelctl.pyspec",
        "pyrelctl.release",
        "pyrelctl.sockets",
        "pyrelctl.tarartifact",
        "pyrelctl.tarheaders",
    ),
    "host": (
        "pyrelctl.allowances",
        "pyrelctl.appconfig",
        "pyrelctl.appconfig.envfile",
        "pyrelctl.appconfig.generations",
        "pyrelctl.delegate",
        "pyrelctl.delegate.client",
        "pyrelctl.delegate.grants",
        "pyrelctl.delegate.policy",
        "pyrelctl.delegate.wire",
        "pyrelctl.download",
        "pyrelctl.hostclaims",
        "pyrelctl.hostfiles",
        "pyrelctl.layout",
        "pyrelctl.mixcookie",
        "pyrelctl.notify",
        "pyrelctl.signatures",
        "pyrelctl.textdir",
    ),
    "systemd": (
        "pyrelctl.bootwindow",
        "pyrelctl.delegate.setup",
        "pyrelctl.journal",
        "pyrelctl.metrics",
        "pyrelctl.procs.failed",
        "pyrelctl.procs.files",
        "pyrelctl.procs.host",
        "pyrelctl.procs.status",
        "pyrelctl.procs.units",
        "pyrelctl.sandboxrun",
        "pyrelctl.socketunit",
        "pyrelctl.steering",
        "pyrelctl.systemd",
        "pyrelctl.transient",
        "pyrelctl.unitfiles",
        "pyrelctl.units",
    ),
    "build": (
        "pyrelctl.build",
        "pyrelctl.buildconfig",
        "pyrelctl.buildlock",
        "pyrelctl.buildsteps",
        "pyrelctl.pyrelease",
        "pyrelctl.wheels",
    ),
    "deploy": (
        "pyrelctl.appconfig.apply",
        "pyrelctl.appsetup",
        "pyrelctl.deploy",
        "pyrelctl.deploy.admission",
        "pyrelctl.deploy.deployer",
        "pyrelctl.deploy.health",
        "pyrelctl.deploy.hooks",
        "pyrelctl.deploy.host",
        "pyrelctl.deploy.options",
        "pyrelctl.deploy.overlap",
        "pyrelctl.deploy.owner",
        "pyrelctl.deploy.preview",
        "pyrelctl.deploy.publish",
        "pyrelctl.deploy.readiness",
        "pyrelctl.deploy.recovery",
        "pyrelctl.deploy.restore",
        "pyrelctl.deploy.retention",
        "pyrelctl.deploy.scale",
        "pyrelctl.deploy.settings",
        "pyrelctl.deploy.strategy",
        "pyrelctl.deploy.switch",
        "pyrelctl.deploy.unpack",
        "pyrelctl.deploy.verify",
        "pyrelctl.deploy.watch",
        "pyrelctl.deploy.watchrun",
        "pyrelctl.uninstall",
    ),
    "operations": (
        "pyrelctl.appconfig.secrets",
        "pyrelctl.doctor",
        "pyrelctl.doctor.app",
        "pyrelctl.doctor.checks",
        "pyrelctl.doctor.epmd",
        "pyrelctl.doctor.findings",
        "pyrelctl.doctor.host",
        "pyrelctl.operate",
    ),
    "cli": (
        "pyrelctl.__main__",
        "pyrelctl.cli",
        "pyrelctl.cli.admin",
        "pyrelctl.cli.common",
        "pyrelctl.cli.config",
        "pyrelctl.cli.console",
        "pyrelctl.cli.deploys",
        "pyrelctl.cli.grants",
        "pyrelctl.cli.reads",
        "pyrelctl.completion",
        "pyrelctl.delegate.serve",
    ),
    "bench": (
        "bench",
        "bench.__main__",
        "bench.availability",
        "bench.boots",
        "bench.capistrano",
        "bench.deploys",
        "bench.held",
        "bench.host",
        "bench.load",
        "bench.memory",
        "bench.mix",
        "bench.plot",
        "bench.probe",
        "bench.python_release",
        "bench.report",
        "bench.rollback",
        "bench.scale",
        "bench.status",
    ),
}

Graph = Mapping[str, Mapping[str, int]]  # module -> imported module -> line of the first import


def find_modules(root: Path = REPO) -> dict[str, Path]:
    """Every module below :data:`PACKAGES`, by dotted name (a package by its own)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: Set[str]) -> str | None:
    """``name`` or the closest package of it that is one of ``modules``."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(
    name: str, source: str, modules: Set[str], is_package: bool = False
) -> dict[str, int]:
    """The modules of ``modules`` that module ``name`` imports, each with the line
    of its first import: every ``import`` statement in the tree, wherever it stands."""
    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target is not None and target != name and target not in found:
            found[target] = line

    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_known(alias.name, modules), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
                submodule = f"{base}.{alias.name}"
                add(_known(submodule if submodule in modules else base, modules), node.lineno)
    return dict(sorted(found.items(), key=lambda item: item[1]))


def import_graph(root: Path = REPO) -> dict[str, dict[str, int]]:
    modules = find_modules(root)
    return {
        name: imports_of(name, path.read_text(), modules.keys(), path.name == "__init__.py")
        for name, path in modules.items()
    }


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The import cycles: Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def a_cycle_through(start: str, component: Set[str], graph: Graph) -> list[str]:
    """One path of imports from ``start`` back to it, inside ``component``."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in graph[v]:
            if w == start:
                return [*paths[v], start]
            if w in component and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"{start} is not in a cycle")


def upward_imports(graph: Graph, layers: Mapping[str, tuple[str, ...]]) -> Iterator[str]:
    """Each import of a module from a layer above its own, as one line."""
    rank = {m: (i, layer) for i, (layer, names) in enumerate(layers.items()) for m in names}
    for module, imported in graph.items():
        for target, line in imported.items():
            if module in rank and target in rank and rank[target][0] > rank[module][0]:
                yield (
                    f"{module} ({rank[module][1]}) imports {target} ({rank[target][1]}, "
                    f"a higher layer) at line {line}"
                )


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_every_module_is_in_one_layer() -> None:
    modules = find_modules()
    listed = [m for names in LAYERS.values() for m in names]
    twice = sorted({m for m in listed if listed.count(m) > 1})
    assert not twice, f"in more than one layer of LAYERS (tests/test_layers.py): {twice}"
    missing = sorted(set(modules) - set(listed))
    assert not missing, (
        "not in any layer: "
        + ", ".join(f"{m} ({modules[m].relative_to(REPO)})" for m in missing)
        + ". Add each to the layer it belongs to in LAYERS, tests/test_layers.py "
        "(pyrelctl/__init__.py says what each layer holds): the lowest layer at or "
        "above everything the module imports."
    )
    gone = sorted(set(listed) - set(modules))
    assert not gone, f"LAYERS (tests/test_layers.py) names modules that no longer exist: {gone}"


def test_no_module_imports_from_a_higher_layer(graph: dict[str, dict[str, int]]) -> None:
    upward = list(upward_imports(graph, LAYERS))
    assert not upward, (
        "imports that point up (move the code down, or pass it in from above):\n"
        + "\n".join(upward)
    )


def test_no_import_cycles(graph: dict[str, dict[str, int]]) -> None:
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles (a base module must not import what builds on it):\n" + (
        "\n".join(
            f"{len(c)} modules {c}, e.g. " + " -> ".join(a_cycle_through(c[0], set(c), graph))
            for c in cycles
        )
    )


def test_the_package_docstring_names_these_layers() -> None:
    """pyrelctl/__init__.py describes the layers of LAYERS, in the same order: each
    is a line of its own, ````name````, followed by what it holds."""
    doc = ast.get_docstring(ast.parse((REPO / "pyrelctl" / "__init__.py").read_text())) or ""
    named = [m[1] for line in doc.splitlines() if (m := re.fullmatch(r"``(\w+)``", line))]
    assert named == list(LAYERS)


# -- the checks themselves, on made-up code -----------------------------------------


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "pyrelctl" / "sub").mkdir(parents=True)
    (tmp_path / "bench").mkdir()
    files = {
        "pyrelctl/__init__.py": "",
        "pyrelctl/low.py": "def f():\n    from pyrelctl import high\n",
        "pyrelctl/high.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from pyrelctl.sub.mid import X\n",
        "pyrelctl/sub/__init__.py": "",
        "pyrelctl/sub/mid.py": "from .. import low\nimport os\n",
        "bench/__init__.py": "import pyrelctl.sub.mid\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph == {
        "bench": {"pyrelctl.sub.mid": 1},
        "pyrelctl": {},
        "pyrelctl.high": {"pyrelctl.sub.mid": 3},
        "pyrelctl.low": {"pyrelctl.high": 2},
        "pyrelctl.sub": {},
        "pyrelctl.sub.mid": {"pyrelctl.low": 1},
    }
    cycle = ["pyrelctl.high", "pyrelctl.low", "pyrelctl.sub.mid"]
    assert strongly_connected(graph) == [cycle]
    assert a_cycle_through("pyrelctl.low", set(cycle), graph) == [
        "pyrelctl.low",
        "pyrelctl.high",
        "pyrelctl.sub.mid",
        "pyrelctl.low",
    ]
    layers = {"a": ("pyrelctl.low", "pyrelctl.sub.mid"), "b": ("pyrelctl.high", "bench")}
    assert list(upward_imports(graph, layers)) == [
        "pyrelctl.low (a) imports pyrelctl.high (b, a higher layer) at line 2"
    ]
