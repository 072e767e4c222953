"""The FastAPI application: collection routes (Segment wire format) and management routes."""

from __future__ import annotations

from fastapi import FastAPI

from huaxiang import __version__
from huaxiang.api import (
    activation,
    admin,
    analytics,
    analytics_value,
    audiences,
    collect,
    imports,
    profiles,
    rules,
    tags,
)
from huaxiang.api import apply as apply_routes
from huaxiang.api import realtime as realtime_routes
from huaxiang.api.collect_app import CollectFirstApp
from huaxiang.api.deps import ADMIN_RESPONSES
from huaxiang.api.errors import install_error_handlers
from huaxiang.runtime import Runtime

DESCRIPTION = """
huaxiang collects events in the Segment Tracking API wire format (so Segment's and RudderStack's
SDKs work unchanged), resolves identities into one profile per person, and serves management routes
for keys, status, rejects, imports and profiles.

* Collection routes (`/v1/...`) take a **write key**: HTTP Basic auth with the key as user name, or
  `writeKey` in the body.
* Management routes (`/admin/...`) take the **admin token** from `huaxiang init` as a Bearer token.
"""


def create_app(runtime: Runtime) -> FastAPI:
    app = CollectFirstApp(
        title="huaxiang",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "collect", "description": "Segment-compatible collection API."},
            {"name": "admin", "description": "Keys, status and rejected events."},
            {
                "name": "imports",
                "description": "Bulk import of events, orders, contacts, DMP lists.",
            },
            {"name": "profiles", "description": "Persons, identities, attributes, consent."},
            {"name": "rules", "description": "Check rules; evaluate them for one person."},
            {"name": "tags", "description": "Tag definitions, lifecycle, refresh, values."},
            {"name": "audiences", "description": "Audiences: sizes, snapshots, holdout, exports."},
            {"name": "activation", "description": "Webhook destinations and deliveries."},
            {"name": "realtime", "description": "Real-time tags and audiences: enter/exit."},
            {"name": "apply", "description": "Definitions from YAML files: plan and apply."},
            {"name": "analytics", "description": "Funnels, paths, dwell, retention, value."},
        ],
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(collect.router)
    app.include_router(admin.router)
    app.include_router(imports.router, responses=ADMIN_RESPONSES)
    app.include_router(profiles.router, responses=ADMIN_RESPONSES)
    app.include_router(rules.router, responses=ADMIN_RESPONSES)
    app.include_router(tags.router, responses=ADMIN_RESPONSES)
    app.include_router(audiences.router, responses=ADMIN_RESPONSES)
    app.include_router(activation.router, responses=ADMIN_RESPONSES)
    app.include_router(realtime_routes.router, responses=ADMIN_RESPONSES)
    app.include_router(apply_routes.router, responses=ADMIN_RESPONSES)
    app.include_router(analytics_value.router, responses=ADMIN_RESPONSES)
    app.include_router(analytics.router, responses=ADMIN_RESPONSES)
    return app
