"""Match a file's columns to a kind's fields.

A mapping says ``{target field: source column}``; it comes from a file (JSON or TOML, either the
table itself or under a ``[columns]`` table) and/or ``--map target=source`` flags (flags win).
Columns named like a field (case and ``-``/space/camelCase ignored, plus common aliases such as
``messageId``, ``mobile`` or ``手机号``) map by themselves. Leftover columns go to the kind's extras
field (event properties, contact attributes) or are reported as ignored.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huaxiang.collect.imports.kinds import Kind
from huaxiang.collect.imports.readers import RawFile
from huaxiang.config import Settings
from huaxiang.errors import ImportFileError, Problem, ValidationError

#: Other names of fields, compared after :func:`canonical`.
ALIASES: dict[str, str] = {
    "messageid": "message_id",
    "msgid": "message_id",
    "userid": "user_id",
    "uid": "user_id",
    "anonymousid": "anonymous_id",
    "deviceid": "anonymous_id",
    "eventname": "event",
    "eventtime": "timestamp",
    "time": "timestamp",
    "originaltimestamp": "original_timestamp",
    "sentat": "sent_at",
    "receivedat": "received_at",
    "mobile": "phone",
    "phonenumber": "phone",
    "手机": "phone",
    "手机号": "phone",
    "手机号码": "phone",
    "电话": "phone",
    "邮箱": "email",
    "emailaddress": "email",
    "unionid": "unionid",
    "openid": "openid",
    "externaluserid": "external_userid",
    "crmid": "crm_id",
    "customerid": "crm_id",
    "客户编号": "crm_id",
    "memberid": "member_id",
    "会员号": "member_id",
    "会员编号": "member_id",
    "orderid": "order_id",
    "订单号": "order_id",
    "订单编号": "order_id",
    "total": "amount",
    "金额": "amount",
    "订单金额": "amount",
    "币种": "currency",
    "商品": "items",
    "渠道": "channel",
    "门店": "store",
    "ordertime": "order_time",
    "createdat": "order_time",
    "下单时间": "order_time",
    "状态": "status",
    "订单状态": "status",
    "refundamount": "refund_amount",
    "退款金额": "refund_amount",
    "updatedat": "updated_at",
    "tag": "label",
    "tags": "label",
    "labels": "label",
    "segment": "label",
    "标签": "label",
    "idtype": "id_type",
    "idvalue": "id_value",
    "confidence": "trust",
    "来源": "source",
}


def canonical(name: str) -> str:
    """Lower-case, camelCase split, no separators: ``Order-ID``, ``orderId`` -> ``orderid``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[\s_\-.]+", "", spaced.lower())


@dataclass(frozen=True, slots=True)
class ResolvedMapping:
    """The outcome: field -> column, leftover columns, and the ones nobody reads."""

    fields: dict[str, str]
    extras: tuple[str, ...]
    ignored: tuple[str, ...]
    explicit: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "fields": dict(self.fields),
            "extras": list(self.extras),
            "ignored": list(self.ignored),
        }


def load_mapping_file(path: Path) -> dict[str, str]:
    """Read ``{target: source}`` from a JSON or TOML file (optionally under ``columns``)."""
    if not path.is_file():
        raise ImportFileError(f"no mapping file at {path}", hint="check the --mapping path")
    text = path.read_text(encoding="utf-8")
    try:
        data: object = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ImportFileError(
            f"the mapping file {path.name} cannot be parsed: {e}",
            hint='write {"target": "source column"} as JSON, or target = "column" as TOML',
        ) from e
    if isinstance(data, dict) and isinstance(data.get("columns"), dict):
        data = data["columns"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ImportFileError(
            f"the mapping file {path.name} must map field names to column names (text to text)",
            hint='e.g. {"order_id": "订单号", "phone": "手机"}',
        )
    return {str(k): str(v) for k, v in data.items()}


def parse_map_flags(flags: Sequence[str]) -> dict[str, str]:
    """``["phone=手机", ...]`` -> ``{"phone": "手机"}``; every malformed flag is reported."""
    mapping: dict[str, str] = {}
    problems: list[Problem] = []
    for flag in flags:
        target, sep, source = flag.partition("=")
        if not sep or not target.strip() or not source.strip():
            problems.append(
                Problem(f"--map {flag}", "not target=source", hint="e.g. --map phone=手机号")
            )
            continue
        mapping[target.strip()] = source.strip()
    if problems:
        raise ValidationError(problems, what="the column mapping")
    return mapping


def resolve_mapping(
    kind: Kind, raw: RawFile, explicit: Mapping[str, str], settings: Settings
) -> ResolvedMapping:
    """Match columns to fields; collect every problem (unknown field, missing column, required)."""
    targets = kind.targets(settings)
    columns = [c for c in raw.columns if c != "_hx_bad_line"]
    problems: list[Problem] = []
    fields: dict[str, str] = {}
    for target, source in explicit.items():
        if target not in targets:
            problems.append(
                Problem(
                    f"mapping {target}={source}",
                    f"{target!r} is not a field of {kind.name} imports",
                    hint=f"fields: {', '.join(targets)}",
                )
            )
        elif source not in columns:
            problems.append(
                Problem(
                    f"mapping {target}={source}",
                    f"{raw.name} has no column {source!r}",
                    hint=f"its columns: {', '.join(columns)}",
                )
            )
        else:
            fields[target] = source
    used = set(fields.values())
    by_canonical = {canonical(t): t for t in targets}
    for column in columns:
        if column in used:
            continue
        key = canonical(column)
        found = by_canonical.get(key) or ALIASES.get(key) or ALIASES.get(column.strip())
        if found is None or found not in targets or found in fields:
            continue
        fields[found] = column
        used.add(column)
    leftover = tuple(c for c in columns if c not in used)
    for f in kind.fields:
        if f.required and f.name not in fields:
            problems.append(
                Problem(
                    f"field {f.name}",
                    f"no column of {raw.name} maps to the required field {f.name!r}",
                    hint=f"name a column {f.name!r} or pass --map {f.name}=COLUMN",
                )
            )
    id_types = kind.identifier_types(settings)
    has_ids = any(t in fields for t in id_types)
    if kind.name == "dmp":
        pair = "id_type" in fields and "id_value" in fields
        if ("id_type" in fields) != ("id_value" in fields):
            problems.append(
                Problem("fields id_type/id_value", "give both or neither", hint="map both")
            )
        has_ids = has_ids or pair
    if id_types and not has_ids:
        problems.append(
            Problem(
                "identifiers",
                f"no column of {raw.name} maps to an identifier",
                hint=f"name a column after one of {', '.join(id_types)} or pass --map",
            )
        )
    if problems:
        raise ValidationError(problems, what=f"the mapping of {raw.name}")
    extras = leftover if kind.extras else ()
    ignored = () if kind.extras else leftover
    return ResolvedMapping(fields, extras, ignored, dict(explicit))
