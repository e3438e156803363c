"""``RouteIndex``: find a request's route without trying every route in turn.

Starlette and FastAPI match routes one after the other, a regular expression each: a route
registered last (the imaging and patient routes, 50-odd routes in) paid ~100 us of matching
per request, as much as the whole of a cached, authenticated request (docs/benchmarks.md).
The index narrows the list to the routes whose first two path segments can match, in their
registered order, and tries those the way the router would. Anything it does not answer with
a full match (405, trailing-slash redirects, 404) goes to the framework's router unchanged,
so the answers are the router's own; only the search is shorter.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Receive, Scope, Send

_MAX_CACHED = 4096  # distinct (segment, segment) keys; junk paths beyond it are not cached
Key = tuple[str, str | None]
# The route the front door already matched for this request (core.frontdoor): the router
# below the framework's layers hands the request to it without searching again.
FOUND = "novaza.route_found"


def _route_path(scope: Scope) -> str:
    """The path the routes see: without the prefix a proxy mounted the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _segments(path: str) -> Key:
    parts = path.split("/", 3)
    return (parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else None)


def may_match(route: BaseRoute, key: Key) -> bool:
    """False only when the route cannot match a path starting with these segments."""
    template = getattr(route, "path", None)
    if isinstance(route, Mount) or not isinstance(template, str):
        return True
    declared = template.split("/")[1:3]
    for level, wanted in enumerate(key):
        pattern = declared[level] if level < len(declared) else None
        if pattern is not None and "{" in pattern:
            return True  # a parameter here (perhaps a :path one): anything may follow
        if pattern is None or wanted is None:
            return pattern is None and wanted is None
        if pattern != wanted:
            return False
    return True


class RouteIndex:
    def __init__(self, router: APIRouter) -> None:
        self.router = router
        self.fallback = router.app  # the framework's full search: partials, redirects, 404
        self._cache: dict[Key, tuple[BaseRoute, ...]] = {}
        # (method, path) -> a route without path parameters that matched it in full: the
        # next request for it skips the regular expressions (whoami, /health, /metrics).
        self._exact: dict[tuple[str, str], tuple[BaseRoute, Scope]] = {}
        self._indexed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.pop(FOUND, None) or self.find(scope)
        if route is not None:
            await route.handle(scope, receive, send)
            return
        await self.fallback(scope, receive, send)

    def find(self, scope: Scope) -> BaseRoute | None:
        """The route fully matching this HTTP request, with its path parameters put in the
        scope as the router would; None for anything the framework's router must answer."""
        if scope["type"] != "http":
            return None
        path = _route_path(scope)
        candidates = self.candidates(path)  # first: it notices routes added since
        exact = self._exact.get((scope["method"], path))
        if exact is not None:
            route, child_scope = exact
            scope.setdefault("router", self.router)
            scope.update(child_scope)
            scope["path_params"] = dict(scope.get("path_params", {}))
            return route
        for route in candidates:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.setdefault("router", self.router)
                scope.update(child_scope)
                if not getattr(route, "param_convertors", True) and len(self._exact) < _MAX_CACHED:
                    self._exact[scope["method"], path] = (route, child_scope)
                return route
        return None

    def candidates(self, path: str) -> tuple[BaseRoute, ...]:
        routes = self.router.routes
        if len(routes) != self._indexed:  # routes added after the first request
            self._cache.clear()
            self._exact.clear()
            self._indexed = len(routes)
        key = _segments(path)
        found = self._cache.get(key)
        if found is None:
            found = tuple(route for route in routes if may_match(route, key))
            if len(self._cache) < _MAX_CACHED:
                self._cache[key] = found
        return found
