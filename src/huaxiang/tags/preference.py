"""Preference tags: the top-N most frequent values of an event property in a window.

A person's value is a JSON list of the property's values (their text form: strings as they are,
numbers and true/false as JSON writes them), most frequent first; ties go to the value seen
most recently, then to the smaller value (Unicode code points). Missing, null, list and object
values are not counted. Persons without any counted value hold no value. ``has_tag(tag, "x")``
holds for the persons whose list contains ``"x"``; each element has its own bitmap.
One SQL query over the events (values are query parameters).
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import orjson

from huaxiang.clock import to_naive_utc
from huaxiang.rules.ast import Last
from huaxiang.rules.compile.functions import json_pointer
from huaxiang.tags.definition import TagDefinition

_QUERY = """
WITH picked AS (
    SELECT e.person_id, json_extract(e.properties, $pointer) AS v, e."timestamp" AS seen_at
    FROM events_with_person e
    JOIN persons p ON p.person_id = e.person_id AND p.merged_into IS NULL
    WHERE e.event = $event
      AND e."timestamp" <= $as_of
      AND ($since::TIMESTAMP IS NULL OR e."timestamp" > $since::TIMESTAMP)
), counted AS (
    SELECT person_id, json_extract_string(v, '$') AS value, count(*) AS n, max(seen_at) AS last_at
    FROM picked
    WHERE v IS NOT NULL AND json_type(v) NOT IN ('ARRAY', 'OBJECT', 'NULL')
    GROUP BY ALL
), ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY person_id ORDER BY n DESC, last_at DESC, value
    ) AS position
    FROM counted
)
SELECT person_id, list(value ORDER BY position) AS top_values
FROM ranked
WHERE position <= $top
GROUP BY person_id
ORDER BY person_id
"""


def compute(con: duckdb.DuckDBPyConnection, tag: TagDefinition, as_of: datetime) -> dict[int, str]:
    """person_id -> the value (a JSON list as text) of a preference tag at ``as_of``."""
    moment = to_naive_utc(as_of)
    since = moment - tag.window.duration.delta if isinstance(tag.window, Last) else None
    rows = con.execute(
        _QUERY,
        {
            "pointer": json_pointer(tag.property),
            "event": tag.event,
            "as_of": moment,
            "since": since,
            "top": tag.top or 1,
        },
    ).fetchall()
    return {int(pid): orjson.dumps(list(values)).decode() for pid, values in rows}
