"""What each kind of import file holds: its fields, their types, and where leftovers go.

A field's ``type`` says how a cell is read (``text``, ``timestamp``, ``decimal``, ``number``,
``json``, ``bool``). Identifier fields are not listed here: every identifier type the workspace
configures (user_id, phone, email, unionid, crm_id, ...) is a field of the kinds that take
identifiers (``Kind.identifiers``).
"""

from __future__ import annotations

from dataclasses import dataclass

from huaxiang.config import Settings
from huaxiang.errors import ImportFileError

FIELD_TYPES = ("text", "timestamp", "decimal", "number", "json", "bool")


@dataclass(frozen=True, slots=True)
class Field:
    """One target field of a kind."""

    name: str
    type: str = "text"
    required: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of import file.

    ``identifiers``: which identifier types are fields (``all`` configured types, only the event
    ones, or none). ``extras``: the field leftover columns are folded into (``properties`` for
    events, ``attributes`` for customers), or None when leftovers are ignored (and reported).
    """

    name: str
    fields: tuple[Field, ...]
    identifiers: str
    extras: str | None
    natural_key: str
    doc: str

    def field(self, name: str) -> Field | None:
        for field in self.fields:
            if field.name == name:
                return field
        return None

    def identifier_types(self, settings: Settings) -> tuple[str, ...]:
        """The identifier types this kind reads, strongest first."""
        if self.identifiers == "events":
            return tuple(
                t.name for t in settings.identifier_types if t.name in ("user_id", "anonymous_id")
            )
        if self.identifiers == "all":
            return tuple(t.name for t in settings.identifier_types)
        return ()

    def targets(self, settings: Settings) -> tuple[str, ...]:
        """Every field name a column can be mapped to."""
        names = [f.name for f in self.fields] + list(self.identifier_types(settings))
        if self.extras:
            names.append(self.extras)
        return tuple(names)


EVENTS = Kind(
    name="events",
    fields=(
        Field("message_id", doc="Segment messageId; a hash of the row when absent"),
        Field("type", doc="track, identify, page, screen, alias, group (default track)"),
        Field("event", doc="event name, required for track"),
        Field("timestamp", "timestamp", required=True, doc="when it happened"),
        Field("original_timestamp", "timestamp"),
        Field("sent_at", "timestamp"),
        Field("received_at", "timestamp", doc="default: the import time"),
        Field("channel", doc="web, miniprogram, app, wecom, store, ..."),
        Field("context", "json"),
        Field("traits", "json", doc="identify traits"),
        Field("properties", "json", doc="JSON object; leftover columns are added to it"),
        Field("group_id", doc="the group of a group call"),
        Field("previous_id", doc="the earlier id of an alias call (linked as an anonymous_id)"),
    ),
    identifiers="events",
    extras="properties",
    natural_key="message_id",
    doc="behaviour events in the Segment message shape",
)

ORDER_STATUSES = (
    "created",
    "pending",
    "paid",
    "shipped",
    "delivered",
    "completed",
    "refunded",
    "partially_refunded",
    "cancelled",
)

#: Other spellings of order statuses found in shop exports.
STATUS_ALIASES: dict[str, str] = {
    "canceled": "cancelled",
    "cancel": "cancelled",
    "closed": "cancelled",
    "refund": "refunded",
    "partial_refund": "partially_refunded",
    "partially refunded": "partially_refunded",
    "partially-refunded": "partially_refunded",
    "complete": "completed",
    "finished": "completed",
    "success": "paid",
    "unpaid": "pending",
    "待付款": "pending",
    "已付款": "paid",
    "已支付": "paid",
    "已发货": "shipped",
    "已完成": "completed",
    "已退款": "refunded",
    "部分退款": "partially_refunded",
    "已取消": "cancelled",
}

ORDERS = Kind(
    name="orders",
    fields=(
        Field("order_id", required=True),
        Field("amount", "decimal", required=True, doc="order total, >= 0"),
        Field("currency", doc="ISO 4217 code, default CNY"),
        Field("items", "json", doc="JSON array of line items"),
        Field("channel"),
        Field("store"),
        Field("order_time", "timestamp", required=True),
        Field("status", doc=", ".join(ORDER_STATUSES) + " (default paid)"),
        Field("refund_amount", "decimal", doc="default 0; at most the amount"),
    ),
    identifiers="all",
    extras=None,
    natural_key="order_id",
    doc="orders with person identifiers, amounts, status and refunds",
)

CUSTOMERS = Kind(
    name="customers",
    fields=(
        Field("updated_at", "timestamp", doc="when the contact was last changed"),
        Field("consent_analytics", "bool"),
        Field("consent_marketing", "bool"),
        Field("consent_personalization", "bool"),
        Field("attributes", "json", doc="JSON object; leftover columns are added to it"),
    ),
    identifiers="all",
    extras="attributes",
    natural_key="identical row",
    doc="CRM contacts: identifiers, attributes and consent",
)

DMP = Kind(
    name="dmp",
    fields=(
        Field("id_type", doc="identifier type, when the file has one id column for all types"),
        Field("id_value", doc="identifier value that goes with id_type"),
        Field("label", required=True, doc="one label, or several separated by | ; or ,"),
        Field("source", doc="who supplied the label (default: --source or the file name)"),
        Field("trust", doc="0..1, or high / medium / low"),
    ),
    identifiers="all",
    extras=None,
    natural_key="identifier, label, source",
    doc="third-party DMP lists: identifier plus tag or segment labels",
)

KINDS: dict[str, Kind] = {k.name: k for k in (EVENTS, ORDERS, CUSTOMERS, DMP)}


def kind_named(name: str) -> Kind:
    kind = KINDS.get(name)
    if kind is None:
        raise ImportFileError(
            f"unknown import kind {name!r}", hint=f"use one of {', '.join(KINDS)}"
        )
    return kind
