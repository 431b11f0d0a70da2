"""protocol/ is sans-IO: no module in it may import an I/O or project library.

The check reads the source with `ast` (nothing is imported), so it also sees imports
inside functions, under `if TYPE_CHECKING:`, in try/except blocks, and dynamic
`importlib.import_module("x")` / `__import__("x")` calls with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"

FORBIDDEN = frozenset(
    {
        "trio",
        "trio_asyncio",
        "redis",
        "hiredis",
        "jwt",
        "kdc_trio",
        "h11",
        "wsproto",
        "socket",
        "asyncio",
        "ssl",
        "select",
        "selectors",
        "threading",
    }
)


def imported_roots(source: str, filename: str = "<string>") -> set[str]:
    """Top-level names of every absolute module the source imports."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    roots.add(first.value.split(".")[0])
    return roots


def protocol_modules() -> list[Path]:
    return sorted(PROTOCOL_DIR.rglob("*.py"))


def test_protocol_modules_exist() -> None:
    names = {p.name for p in protocol_modules()}
    assert {"__init__.py", "errors.py", "sse.py", "envelope.py"} <= names


@pytest.mark.parametrize("path", protocol_modules(), ids=lambda p: str(p.relative_to(PROTOCOL_DIR)))
def test_protocol_module_is_pure(path: Path) -> None:
    bad = imported_roots(path.read_text(encoding="utf-8"), str(path)) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}; protocol/ must stay sans-IO"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import trio", {"trio"}),
        ("import os, socket as s", {"socket"}),
        ("import redis.asyncio", {"redis"}),
        ("from h11 import Request", {"h11"}),
        ("from kdc_trio.config import Settings", {"kdc_trio"}),
        ("def f():\n    import asyncio\n", {"asyncio"}),
        ("try:\n    import hiredis\nexcept ImportError:\n    pass\n", {"hiredis"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import wsproto\n", {"wsproto"}),
        ("import importlib\nimportlib.import_module('jwt')", {"jwt"}),
        ("__import__('threading')", {"threading"}),
        ("from . import errors\nfrom .sse import encode_event", set()),
        ("import json, re, dataclasses", set()),
        ("from protocol.errors import RemoteProtocolError", set()),
        ("import trio_asyncio, selectors, select, ssl", {"trio_asyncio", "selectors", "select", "ssl"}),
    ],
)
def test_checker_sees_imports(source: str, expected: set[str]) -> None:
    assert imported_roots(source) & FORBIDDEN == expected
