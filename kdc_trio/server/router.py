"""Path + method routing: 404 for an unknown path, 405 with `Allow` for a wrong method."""

from __future__ import annotations

from typing import Awaitable

from kdc_trio.server.connection import Exchange, Handler
from kdc_trio.server.request import HTTPError, Request


class Router:
    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefix: list[tuple[str, dict[str, Handler]]] = []

    def add(self, methods: str, path: str, handler: Handler, *, prefix: bool = False) -> None:
        """Route each of the space-separated `methods` at `path` (or every path under it)."""
        if prefix:
            table = next((t for p, t in self._prefix if p == path), None)
            if table is None:
                table = {}
                self._prefix.append((path, table))
                self._prefix.sort(key=lambda pt: -len(pt[0]))
        else:
            table = self._exact.setdefault(path, {})
        for m in methods.split():
            table[m] = handler

    def _table(self, path: str) -> dict[str, Handler] | None:
        table = self._exact.get(path)
        if table is not None:
            return table
        for p, t in self._prefix:
            if path.startswith(p):
                return t
        return None

    def allowed(self, path: str) -> list[str]:
        table = self._table(path) or {}
        methods = set(table)
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def __call__(self, request: Request, ex: Exchange) -> Awaitable[None]:
        """The route's handler call, returned rather than awaited: an idle stream's stack holds
        no frame of the router's for hours (404/405 raise here, in the caller's `await`)."""
        table = self._table(request.path)
        if table is None:
            raise HTTPError(404, "not_found", f"no route for {request.path}")
        handler = table.get(request.method) or (table.get("GET") if request.method == "HEAD" else None)
        if handler is None:
            allow = ", ".join(self.allowed(request.path))
            raise HTTPError(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                            headers=[("allow", allow)])
        return handler(request, ex)
