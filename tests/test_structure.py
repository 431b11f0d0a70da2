"""The shape of the tree: nothing imports its composer back, and no module imports form a cycle.

Transports and the processor receive narrow interfaces (kdc_trio/ports.py) built by the
composition root; only the roots and the command line may import `kdc_trio.gateway`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kdc_trio"
# The composition roots (the gateway and its Redis counterpart), the command line, and its
# counterpart for Python programs that host the gateway (`kdc_trio.running`).
MAY_IMPORT_GATEWAY = {"kdc_trio.gateway", "kdc_trio.gateway_redis", "kdc_trio.cli", "kdc_trio.embed"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(path: Path, *, type_checking: bool) -> set[str]:
    """The kdc_trio modules this file imports, at any depth (function-level ones too); imports
    under `if TYPE_CHECKING:` only when `type_checking`."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
        if _is_type_checking(node) and not type_checking:
            for child in getattr(node, "orelse", []):
                walk(child)
            return
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m == "kdc_trio" or m.startswith("kdc_trio.")}


def _graph(*, type_checking: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, type_checking=type_checking) if m in modules and m != name}
            for name, path in modules.items()}


def test_only_composition_roots_import_the_gateway() -> None:
    """Even for type annotations: transports take the Protocols of kdc_trio/ports.py."""
    importers = {name for name, deps in _graph(type_checking=True).items() if "kdc_trio.gateway" in deps}
    assert importers <= MAY_IMPORT_GATEWAY, sorted(importers - MAY_IMPORT_GATEWAY)


def test_no_import_cycles() -> None:
    """No two modules import each other at run time (annotations under TYPE_CHECKING aside)."""
    graph = _graph(type_checking=False)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep.startswith(node + ".") or node.startswith(dep + "."):
                continue  # a package and its own modules
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_checks_see_imports() -> None:
    """The scanner itself: it finds the gateway's own imports, relative and function-level ones."""
    deps = _graph(type_checking=False)["kdc_trio.gateway"]
    assert "kdc_trio.transports.sse" in deps  # imported inside a method
    assert "kdc_trio.gateway_redis" in deps
    assert "kdc_trio.ports" in _graph(type_checking=True)["kdc_trio.transports.sse"]
    assert "kdc_trio.ports" not in _graph(type_checking=False)["kdc_trio.transports.sse"]


async def test_the_composition_root_hands_out_values_that_fit_the_ports() -> None:
    """The Protocols in kdc_trio/ports.py are what the transports use: the root's values fit them."""
    from kdc_trio.gateway import memory_gateway
    from kdc_trio.ports import (ChatPorts, GuardPort, IdentifyPorts, Publisher, RestPorts, ServerView,
                                SessionChannels, TurnPorts)
    from tests.support.gateway import test_settings

    gw = memory_gateway(test_settings(), with_worker=False)
    for port in (IdentifyPorts, TurnPorts, ChatPorts, RestPorts):
        assert isinstance(gw.ports, port), port
    assert isinstance(gw.ports.relay, SessionChannels) and isinstance(gw.ports.relay, Publisher)
    assert isinstance(gw.ports.server, ServerView)
    assert isinstance(gw.ports.guard, GuardPort)
    assert not isinstance(object(), SessionChannels)
