"""What the API routes and the CLI commands call: one function per action, JSON-ready answers.

Changes run in one store transaction each; reads use their own cursor.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from huaxiang.audiences.definitions import audience_rules
from huaxiang.audiences.expand import tags_through_audiences
from huaxiang.config import Settings
from huaxiang.profiles.view import resolve_ref
from huaxiang.rules.ast import Scalar
from huaxiang.store import Store
from huaxiang.tags import catalog, rfm
from huaxiang.tags.definition import Status, TagDefinition, TagKind
from huaxiang.tags.dry_run import dry_run
from huaxiang.tags.graph import used_tags
from huaxiang.tags.manual import set_manual_value
from huaxiang.tags.quality import tag_quality
from huaxiang.tags.refresh import refresh_tags, take_offline_values
from huaxiang.tags.spec import edit_definition, read_definition
from huaxiang.tags.values import first_row


@contextmanager
def _reading(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    con = store.cursor()
    try:
        yield con
    finally:
        con.close()


def _graph_without(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, set[str]]:
    return {n: d for n, d in catalog.dependency_graph(catalog.list_tags(con)).items() if n != name}


def create_tag(store: Store, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Check and store a new tag as a draft (version 1)."""
    with store.transaction() as con:
        name = payload.get("name")
        schema = catalog.tag_schema(con, also=[name] if isinstance(name, str) else [])
        tag = read_definition(payload, schema, _graph_without(con, str(name)))
        return catalog.insert_tag(con, tag).describe()


def edit_tag(store: Store, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Edit a tag: in place for a draft, a new version for an active or paused one."""
    with store.transaction() as con:
        current = catalog.get_tag(con, name)
        if current.status is Status.OFFLINE:
            raise catalog.LifecycleError(
                f"tag {name!r} is offline and cannot be edited",
                hint="create a new tag with another name",
            )
        schema = catalog.tag_schema(con, also=[name])
        edited = edit_definition(current, changes, schema, _graph_without(con, name))
        tag = catalog.update_tag(con, current, edited)
        return {**tag.describe(), "new_version": tag.version != current.version}


def _summary(tag: TagDefinition, persons: int) -> dict[str, Any]:
    return {
        "name": tag.name,
        "kind": tag.kind.value,
        "category": tag.category,
        "owner": tag.owner,
        "sensitivity": tag.sensitivity.value,
        "status": tag.status.value,
        "version": tag.version,
        "refresh": str(tag.refresh),
        "ttl_days": tag.ttl_days,
        "persons": persons,
    }


def list_tag_summaries(
    store: Store, *, status: str | None = None, category: str | None = None
) -> list[dict[str, Any]]:
    """Every tag (optionally of one status, or under one category path), with its holders."""
    with _reading(store) as con:
        counts = dict(con.execute("SELECT tag, count(*) FROM tag_values GROUP BY tag").fetchall())
        tags = catalog.list_tags(con, statuses=[Status(status)] if status else None)
    if category:
        prefix = category.strip("/")
        tags = [t for t in tags if t.category == prefix or t.category.startswith(prefix + "/")]
    return [_summary(t, int(counts.get(t.name, 0))) for t in tags]


def show_tag(store: Store, name: str) -> dict[str, Any]:
    """A tag's definition, dependencies, dependents, versions and quality."""
    with _reading(store) as con:
        tag = catalog.get_tag(con, name)
        others = catalog.list_tags(con)
        audiences = audience_rules(con)
        return {
            "definition": tag.describe(),
            "uses": sorted(used_tags(tag.rules())),
            "used_by": sorted(
                t.name
                for t in others
                if t.name != name
                and t.status is not Status.OFFLINE
                and name in used_tags(t.rules())
            ),
            "used_by_audiences": sorted(
                audience
                for audience, rule in audiences.items()
                if name in used_tags([rule]) | tags_through_audiences([rule], audiences)
            ),
            "versions": catalog.versions(con, name),
            "quality": tag_quality(con, tag),
        }


def dry_run_tag(
    store: Store, name: str, *, as_of: datetime | None = None, sample: int = 10
) -> dict[str, Any]:
    with _reading(store) as con:
        return dry_run(con, catalog.get_tag(con, name), as_of=as_of, sample=sample)


def move_tag(store: Store, name: str, target: Status) -> dict[str, Any]:
    """A lifecycle move (activate, pause, take offline); offline removes the values."""
    with store.transaction() as con:
        tag = catalog.get_tag(con, name)
        before = tag.status
        moved = catalog.set_status(con, tag, target)
        removed = take_offline_values(con, moved) if target is Status.OFFLINE else 0
    return {"tag": name, "from": before.value, "to": target.value, "values_removed": removed}


def refresh(
    store: Store,
    names: Sequence[str] | None = None,
    *,
    as_of: datetime | None = None,
    full: bool = False,
    trigger: str = "manual",
) -> dict[str, Any]:
    """Refresh the named tags (default: every active tag) at ``as_of`` (default now);
    incremental where it can be, every person with ``full``."""
    moment = as_of or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    with store.transaction() as con:
        runs = refresh_tags(con, names or None, as_of=moment, full=full, trigger=trigger)
    return {"as_of": moment.astimezone(UTC).isoformat(), "runs": runs}


def set_value(
    store: Store,
    settings: Settings,
    name: str,
    ref: str,
    value: Scalar | None,
    *,
    by: str = "",
) -> dict[str, Any]:
    """Set (or, with ``value`` None, remove) a manual tag's value for the person ``ref``."""
    with store.transaction() as con:
        tag = catalog.get_tag(con, name)
        person_id = resolve_ref(con, settings, ref)
        answer = set_manual_value(con, tag, person_id, value, by=by)
    return {"person": ref, **answer}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


def tag_values(store: Store, name: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """A page of a tag's current values, by person id."""
    with _reading(store) as con:
        tag = catalog.get_tag(con, name)
        total = first_row(con.execute("SELECT count(*) FROM tag_values WHERE tag = ?", [name]))
        rows = con.execute(
            """
            SELECT v.person_id, p.person_key, CAST(v.value AS VARCHAR), v.version,
                   v.qualified_at, v.expires_at
            FROM tag_values_now v LEFT JOIN persons p USING (person_id)
            WHERE v.tag = ? ORDER BY v.person_id LIMIT ? OFFSET ?
            """,
            [name, limit, offset],
        ).fetchall()
        scores = (
            rfm.read_scores(con, name, [int(row[0]) for row in rows])
            if tag.kind is TagKind.RFM
            else {}
        )
    return {
        "tag": name,
        "persons": int(total[0]) if total else 0,
        "values": [
            {
                "person_id": int(pid),
                "person_key": None if key is None else str(key),
                "value": orjson.loads(value),
                "version": int(version),
                "qualified_at": _iso(qualified),
                "expires_at": _iso(expires),
                **({"scores": scores.get(int(pid))} if tag.kind is TagKind.RFM else {}),
            }
            for pid, key, value, version, qualified, expires in rows
        ],
    }


def tag_history(store: Store, name: str, *, limit: int = 100) -> dict[str, Any]:
    """The latest changes of a tag's values (entered, left, changed, expired), newest first."""
    with _reading(store) as con:
        catalog.get_tag(con, name)
        rows = con.execute(
            """
            SELECT h.person_id, p.person_key, h.change, CAST(h.old_value AS VARCHAR),
                   CAST(h.new_value AS VARCHAR), h.version, h.changed_at, h.cause, h.run_id
            FROM tag_changes h LEFT JOIN persons p USING (person_id)
            WHERE h.tag = ? ORDER BY h.recorded_at DESC, h.changed_at DESC, h.person_id LIMIT ?
            """,
            [name, limit],
        ).fetchall()
    return {
        "tag": name,
        "changes": [
            {
                "person_id": int(pid),
                "person_key": None if key is None else str(key),
                "change": str(change),
                "old_value": None if old is None else orjson.loads(old),
                "new_value": None if new is None else orjson.loads(new),
                "version": int(version),
                "at": _iso(at),
                "cause": str(cause),
                "run_id": None if run_id is None else int(run_id),
            }
            for pid, key, change, old, new, version, at, cause, run_id in rows
        ],
    }
