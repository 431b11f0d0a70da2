"""Loading the bundle: any class with `async def run(turn, communicator)`.

`KDC_BUNDLE` names it as `module:Class` (importable from `sys.path`) or as `path/to/file.py:Class`
(a Python file loaded at run time, so a server started anywhere serves the user's own bundle).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kdc_trio.processor.turn import Turn
    from kdc_trio.sdk.communicator import ChatCommunicator


class Bundle(Protocol):
    async def run(self, turn: "Turn", communicator: "ChatCommunicator") -> None: ...


class BundleLoadError(Exception):
    """The spec names nothing loadable: the message says what and why (shown to the operator)."""


def _is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or os.sep in module_part


def _load_file(path: str) -> ModuleType:
    """Import a Python file under a name derived from its absolute path (stable, no clashes)."""
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise BundleLoadError(f"no such file: {full}")
    stem = os.path.splitext(os.path.basename(full))[0]
    name = f"kdc_bundle_{stem}_{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise BundleLoadError(f"cannot load {full} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_object(spec: str) -> Any:
    """`module:attr.path` or `path/to/file.py:attr.path` → the object."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise BundleLoadError(f"expected 'module:attribute' or 'path/to/file.py:attribute', got {spec!r}")
    try:
        obj: Any = _load_file(module_part) if _is_path(module_part) else importlib.import_module(module_part)
    except BundleLoadError:
        raise
    except ImportError as exc:
        raise BundleLoadError(f"cannot import {module_part!r}: {exc}") from exc
    except Exception as exc:  # the user's file raised while importing: say where
        raise BundleLoadError(f"{module_part} failed to import: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BundleLoadError(f"{module_part} has no attribute {attr!r}") from None
    return obj


def load_bundle(spec: str) -> Bundle:
    cls = load_object(spec)
    try:
        bundle = cls() if isinstance(cls, type) else cls
    except Exception as exc:
        raise BundleLoadError(f"{spec}: constructing the bundle failed: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(bundle, "run", None)):
        raise BundleLoadError(f"{spec} has no run(turn, communicator)")
    return bundle
