"""Loading the bundle (`KDC_BUNDLE=module:Class`): any class with `async def run(turn, communicator)`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kdc_trio.processor.turn import Turn
    from kdc_trio.sdk.communicator import ChatCommunicator


class Bundle(Protocol):
    async def run(self, turn: "Turn", communicator: "ChatCommunicator") -> None: ...


def load_object(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:attribute', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_bundle(spec: str) -> Bundle:
    cls = load_object(spec)
    bundle = cls() if isinstance(cls, type) else cls
    if not callable(getattr(bundle, "run", None)):
        raise TypeError(f"{spec} has no run(turn, communicator)")
    return bundle
