"""What a tag is, as data: kind, taxonomy, owner, sensitivity, lifecycle status, refresh mode,
TTL, and the kind-specific part (a rule, ordered cases, imported labels, a measure or a
customer-value model, a preference's event and property, an RFM tag's order event and revenue
property).

Definitions are immutable; the catalog stores them (``catalog.py``) and the input reader
(``spec.py``) builds them from user input after checking every field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

from huaxiang.rules.ast import AllTime, Last, Measure, Rule, Scalar
from huaxiang.rules.json_form import from_json, measure_from_json, measure_to_json, to_json
from huaxiang.rules.literals import parse_duration
from huaxiang.rules.text import measure_to_text, to_text

TagWindow = Last | AllTime
"""The window of a preference or RFM tag: the last N minutes/hours/days, or all time."""


def window_text(window: TagWindow) -> str:
    """``90d`` or ``all``."""
    return str(window.duration) if isinstance(window, Last) else "all"


def parse_window(text: str) -> TagWindow:
    """``90d`` / ``24h`` / ``30m`` or ``all``; ValueError otherwise."""
    cleaned = text.strip().lower()
    if cleaned in ("all", "all time"):
        return AllTime()
    return Last(parse_duration(cleaned))


class TagKind(StrEnum):
    """How a tag gets its values."""

    RULE = "rule"
    """Yes/no: members are the persons meeting one rule (value ``true``)."""
    ENUMERATED = "enumerated"
    """Ordered cases (value, rule): the first matching case gives the value; optional default."""
    MANUAL = "manual"
    """Values set on persons one by one through the API or the CLI."""
    IMPORTED = "imported"
    """Labels of DMP/CRM files (``dmp_labels``) mapped to values, filtered by source and trust."""
    METRIC = "metric"
    """A per-person number at as_of: a measure (``sum(revenue of "Order Completed", 90d)``), or
    a figure of a customer-value model refitted at each refresh (:class:`MetricModel`)."""
    PREFERENCE = "preference"
    """The top-N most frequent values of an event property in a window, as a JSON list."""
    RFM = "rfm"
    """Recency / frequency / monetary of an order event: scores 1-5 and one of eight segments."""


class SegmentNames(StrEnum):
    """The language of an RFM tag's segment names (values)."""

    ZH = "zh"
    EN = "en"


class Status(StrEnum):
    """Lifecycle: draft -> active -> paused -> offline; paused -> active again."""

    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    OFFLINE = "offline"


class Sensitivity(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    SENSITIVE = "sensitive"


class RefreshKind(StrEnum):
    MANUAL = "manual"
    HOURLY = "hourly"
    DAILY = "daily"
    EVERY_N_HOURS = "every_n_hours"
    REALTIME = "realtime"
    """Kept current event by event by the real-time engine (``huaxiang.realtime``)."""


_EVERY = re.compile(r"^every_n_hours\((\d{1,5})\)$")


@dataclass(frozen=True, slots=True)
class RefreshMode:
    """When a tag should be refreshed: ``manual``, ``hourly``, ``daily``, ``every_n_hours(72)``.

    The server's scheduler (``tags/schedule.py``) refreshes a tag when its mode makes it due;
    ``realtime`` tags are kept by the real-time engine instead.
    """

    kind: RefreshKind = RefreshKind.MANUAL
    hours: int | None = None

    @classmethod
    def parse(cls, text: str) -> RefreshMode:
        """Read ``manual``, ``hourly``, ``daily`` or ``every_n_hours(N)``; ValueError otherwise."""
        cleaned = text.strip().lower().replace(" ", "")
        found = _EVERY.match(cleaned)
        if found:
            hours = int(found.group(1))
            if not 1 <= hours <= 8784:
                raise ValueError("every_n_hours takes 1 to 8784 hours")
            return cls(RefreshKind.EVERY_N_HOURS, hours)
        if cleaned in (
            RefreshKind.MANUAL,
            RefreshKind.HOURLY,
            RefreshKind.DAILY,
            RefreshKind.REALTIME,
        ):
            return cls(RefreshKind(cleaned))
        raise ValueError(f"unknown refresh mode {text!r}")

    def interval(self) -> timedelta | None:
        """How often the scheduler refreshes (None: by hand, or by the real-time engine)."""
        match self.kind:
            case RefreshKind.HOURLY:
                return timedelta(hours=1)
            case RefreshKind.DAILY:
                return timedelta(days=1)
            case RefreshKind.EVERY_N_HOURS:
                return timedelta(hours=self.hours or 1)
        return None

    def __str__(self) -> str:
        if self.kind is RefreshKind.EVERY_N_HOURS:
            return f"every_n_hours({self.hours})"
        return self.kind.value


class ModelFigure(StrEnum):
    """Which per-person figure of the customer-value model a metric tag holds."""

    EXPECTED_PURCHASES = "expected_purchases"
    """BG/NBD: expected purchases in the next ``horizon_days``."""
    CLV = "clv"
    """Expected value over the horizon: expected purchases x expected value per purchase."""
    EXPECTED_VALUE_PER_PURCHASE = "expected_value_per_purchase"
    """Gamma-Gamma: expected value of one purchase."""
    P_ALIVE = "p_alive"
    """BG/NBD: probability that the person is still an active customer."""


MODEL_TYPES = ("clv",)
"""Model families a metric tag can take (``clv``: BG/NBD + Gamma-Gamma, ``analytics/clv.py``)."""


@dataclass(frozen=True, slots=True)
class MetricModel:
    """A metric tag's number from a fitted model instead of a measure: BG/NBD + Gamma-Gamma
    fitted on every buyer's purchases up to the refresh's as_of (within ``history``), then one
    figure per buyer. A refresh refits, so values follow new orders; non-buyers hold no value.
    """

    figure: ModelFigure
    horizon_days: float = 90.0
    conversion_event: str | None = None
    """The purchase event; None: the imported orders (refunds subtracted)."""
    revenue_property: str = "revenue"
    """The conversion event's property read as the purchase value."""
    history: TagWindow = field(default_factory=AllTime)
    """Purchases read: the last N days before as_of, or all."""
    type: str = "clv"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "figure": self.figure.value,
            "horizon_days": self.horizon_days,
            "conversion_event": self.conversion_event,
            "revenue_property": self.revenue_property,
            "history": window_text(self.history),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricModel:
        """From a stored (trusted) JSON form."""
        return cls(
            figure=ModelFigure(data["figure"]),
            horizon_days=float(data.get("horizon_days", 90.0)),
            conversion_event=data.get("conversion_event"),
            revenue_property=str(data.get("revenue_property", "revenue")),
            history=parse_window(str(data.get("history", "all"))),
            type=str(data.get("type", "clv")),
        )


@dataclass(frozen=True, slots=True)
class Case:
    """One case of an enumerated tag: persons meeting ``rule`` get ``value``."""

    value: Scalar
    rule: Rule


@dataclass(frozen=True, slots=True)
class LabelValue:
    """An imported label and the tag value it gives."""

    label: str
    value: Scalar = True


@dataclass(frozen=True, slots=True)
class TagDefinition:
    name: str
    kind: TagKind
    category: str = ""
    """Taxonomy path, ``/``-separated: ``兴趣/课程/Python``."""
    owner: str = ""
    description: str = ""
    sensitivity: Sensitivity = Sensitivity.INTERNAL
    refresh: RefreshMode = field(default_factory=RefreshMode)
    ttl_days: int | None = None
    rule: Rule | None = None
    """Rule tags."""
    cases: tuple[Case, ...] = ()
    """Enumerated tags, in order: the first case a person meets gives the value."""
    default: Scalar | None = None
    """Enumerated tags: the value of persons meeting no case (none: they get no value)."""
    labels: tuple[LabelValue, ...] = ()
    """Imported tags, in order: the first label a person holds gives the value."""
    sources: tuple[str, ...] = ()
    """Imported tags: only labels from these sources (all sources when empty)."""
    min_trust: float | None = None
    """Imported tags: only labels with at least this trust level."""
    measure: Measure | None = None
    """Metric tags: the per-person number."""
    model: MetricModel | None = None
    """Metric tags without a measure: the customer-value model giving the number."""
    event: str = ""
    """Preference tags: the event counted; RFM tags: the order event."""
    property: str = ""
    """Preference tags: the property whose values are ranked."""
    top: int | None = None
    """Preference tags: how many values a person's list holds at most."""
    window: TagWindow | None = None
    """Preference and RFM tags: the window of events read."""
    revenue: str = ""
    """RFM tags: the property summed for the monetary value."""
    names: SegmentNames | None = None
    """RFM tags: segment names in Chinese (zh) or English (en)."""
    status: Status = Status.DRAFT
    version: int = 1

    def rules(self) -> list[Rule]:
        """Every rule of the definition (the rule, or the rules of the cases)."""
        if self.rule is not None:
            return [self.rule]
        return [case.rule for case in self.cases]

    def with_status(self, status: Status) -> TagDefinition:
        return replace(self, status=status)

    def spec(self) -> dict[str, Any]:
        """The kind-specific part as JSON (rules in their JSON form)."""
        spec: dict[str, Any] = {}
        if self.rule is not None:
            spec["rule"] = to_json(self.rule)
        if self.cases:
            spec["cases"] = [{"value": c.value, "rule": to_json(c.rule)} for c in self.cases]
        if self.default is not None:
            spec["default"] = self.default
        if self.labels:
            spec["labels"] = [{"label": lv.label, "value": lv.value} for lv in self.labels]
        if self.sources:
            spec["sources"] = list(self.sources)
        if self.min_trust is not None:
            spec["min_trust"] = self.min_trust
        if self.measure is not None:
            spec["measure"] = measure_to_json(self.measure)
        if self.model is not None:
            spec["model"] = self.model.to_json()
        if self.event:
            spec["event"] = self.event
        if self.property:
            spec["property"] = self.property
        if self.top is not None:
            spec["top"] = self.top
        if self.window is not None:
            spec["window"] = window_text(self.window)
        if self.revenue:
            spec["revenue"] = self.revenue
        if self.names is not None:
            spec["names"] = self.names.value
        return spec

    def document(self) -> dict[str, Any]:
        """The whole definition as JSON (what a version keeps)."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "category": self.category,
            "owner": self.owner,
            "description": self.description,
            "sensitivity": self.sensitivity.value,
            "refresh": str(self.refresh),
            "ttl_days": self.ttl_days,
            "status": self.status.value,
            "version": self.version,
            "spec": self.spec(),
        }

    def describe(self) -> dict[str, Any]:
        """The definition for people: rules in their text form."""
        out = self.document()
        spec = out.pop("spec")
        if self.rule is not None:
            out["rule"] = to_text(self.rule)
        if self.cases:
            out["cases"] = [{"value": c.value, "rule": to_text(c.rule)} for c in self.cases]
        if "default" in spec:
            out["default"] = spec["default"]
        if self.labels:
            out["labels"] = spec["labels"]
            out["sources"] = list(self.sources)
            out["min_trust"] = self.min_trust
        if self.measure is not None:
            out["measure"] = measure_to_text(self.measure)
        if self.model is not None:
            out["model"] = spec["model"]
        for key in ("event", "property", "top", "window", "revenue", "names"):
            if key in spec:
                out[key] = spec[key]
        return out


def spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`TagDefinition` from a stored (trusted) spec."""
    fields: dict[str, Any] = {}
    if "rule" in spec:
        fields["rule"] = from_json(spec["rule"])
    if "cases" in spec:
        fields["cases"] = tuple(Case(c["value"], from_json(c["rule"])) for c in spec["cases"])
    if "default" in spec:
        fields["default"] = spec["default"]
    if "labels" in spec:
        fields["labels"] = tuple(LabelValue(lv["label"], lv["value"]) for lv in spec["labels"])
    if "sources" in spec:
        fields["sources"] = tuple(spec["sources"])
    if "min_trust" in spec:
        fields["min_trust"] = spec["min_trust"]
    if "measure" in spec:
        fields["measure"] = measure_from_json(spec["measure"])
    if "model" in spec:
        fields["model"] = MetricModel.from_json(spec["model"])
    for key in ("event", "property", "top", "revenue"):
        if key in spec:
            fields[key] = spec[key]
    if "window" in spec:
        fields["window"] = parse_window(spec["window"])
    if "names" in spec:
        fields["names"] = SegmentNames(spec["names"])
    return fields
