"""The served OpenAPI schema describes every route the app really has."""

from __future__ import annotations

import importlib
import pkgutil

import httpx
from fastapi.routing import APIRoute

import huaxiang.api
from huaxiang.api.app import create_app
from live import LiveServer


def test_every_route_is_in_the_schema_with_answers(server: LiveServer) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = schema["paths"]
    app_routes = [
        route
        for route in server_app_routes(server)
        if isinstance(route, APIRoute) and route.include_in_schema
    ]
    assert len(app_routes) >= 70
    for route in app_routes:
        assert route.path in paths, f"{route.path} missing from /openapi.json"
        for method in route.methods - {"HEAD"}:
            operation = paths[route.path][method.lower()]
            answers = operation["responses"]
            ok = [code for code in answers if code.startswith("2")]
            assert ok, f"{method} {route.path} declares no success answer"
            if route.path.startswith("/admin"):
                assert "401" in answers, f"{method} {route.path} does not declare 401"
                assert operation.get("security"), f"{method} {route.path} has no security"
            assert operation.get("summary") or operation.get("description"), route.path


def test_docs_pages_are_served(server: LiveServer) -> None:
    assert httpx.get(server.url + "/docs").status_code == 200
    assert httpx.get(server.url + "/redoc").status_code == 200


def server_app_routes(server: LiveServer) -> list[object]:
    """The routes of every router module of ``huaxiang.api`` (each one the app must include)."""
    modules = [
        importlib.import_module(f"huaxiang.api.{info.name}")
        for info in pkgutil.iter_modules(huaxiang.api.__path__)
    ]
    routers = [m.router for m in modules if hasattr(m, "router")]
    assert len(routers) >= 12
    schema = create_app(server.runtime).openapi()
    assert schema["paths"]
    return [route for router in routers for route in router.routes]
