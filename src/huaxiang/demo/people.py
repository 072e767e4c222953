"""Demo persons: who they are, how they can be recognised, and their latent interests.

Each person is drawn from one random stream in order, so a seed fixes everyone. Identifiers are
unique per person (phones by an injective formula), so the truth about who is who stays exact:
every identifier a person shows anywhere (events, orders, CRM, DMP, campaign file) links back to
that one person through identify calls or the business files.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

from huaxiang.demo.catalog import CATEGORIES, ITEMS_BY_CATEGORY, Item

#: Segment mix. ``silent`` is the planted interest-without-purchase group; ``offline`` persons
#: only buy in stores and never browse online.
SEGMENTS: tuple[tuple[str, float], ...] = (
    ("loyal", 0.08),
    ("regular", 0.22),
    ("browser", 0.62),
    ("silent", 0.05),
    ("offline", 0.03),
)

#: Per-session purchase probability before the channel factor.
BASE_CONVERSION: dict[str, float] = {
    "loyal": 0.22,
    "regular": 0.07,
    "browser": 0.012,
    "silent": 0.02,
    "offline": 0.0,
}

#: Campaign: probability of ordering in the campaign window without the campaign.
CAMPAIGN_BASE: dict[str, float] = {
    "loyal": 0.20,
    "regular": 0.08,
    "browser": 0.03,
    "silent": 0.03,
    "offline": 0.0,
}

PLATFORMS: tuple[tuple[str, float], ...] = (("web", 0.30), ("miniprogram", 0.40), ("app", 0.30))

CITIES: tuple[tuple[str, float], ...] = (
    ("上海", 0.14),
    ("北京", 0.13),
    ("广州", 0.09),
    ("深圳", 0.09),
    ("杭州", 0.08),
    ("成都", 0.08),
    ("武汉", 0.06),
    ("南京", 0.06),
    ("西安", 0.05),
    ("苏州", 0.05),
    ("重庆", 0.05),
    ("长沙", 0.04),
    ("天津", 0.04),
    ("郑州", 0.04),
)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕"
    + "彬鑫宇浩然子涵欣怡梓萱思远一诺"
)
EMAIL_DOMAINS = ("qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com")
PHONE_PREFIXES = (130, 131, 132, 135, 136, 137, 138, 139, 150, 151, 152, 158, 159, 186, 187, 188)
#: Numbers the identity blocklist treats as tests; never given to a real demo person.
TEST_PHONES = frozenset({"13800138000", "13900139000", "13888888888", "13000000000"})

_ALNUM = string.ascii_letters + string.digits


@dataclass(slots=True)
class Person:
    """One real person of the demo world, with everything the generator needs to act for them."""

    index: int
    segment: str
    interests: tuple[str, ...]  # category keys, strongest first
    platforms: tuple[str, ...]  # devices used online, primary first
    anonymous_ids: dict[str, str]
    name: str
    gender: str
    city: str
    user_id: str | None = None
    member_id: str | None = None
    phone: str | None = None
    email: str | None = None
    openid: str | None = None
    unionid: str | None = None
    external_userid: str | None = None
    crm_id: str | None = None
    crm_level: str | None = None
    consent_marketing: bool = True
    offline_shopper: bool = False
    price_sensitive: bool = False
    silent_item: Item | None = None
    campaign_group: str | None = None  # "treatment" / "holdout" / None (not eligible)
    campaign_u: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def logged_in(self) -> bool:
        return self.user_id is not None

    @property
    def offline_only(self) -> bool:
        return self.segment == "offline"


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for value, weight in table:
        x -= weight
        if x < 0:
            return value
    return table[-1][0]


def _token(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(_ALNUM, k=length))


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def phone_of(index: int, seed: int) -> str:
    """A valid Chinese mobile number, unique per (index, seed) for index < 10**8."""
    prefix = PHONE_PREFIXES[index % len(PHONE_PREFIXES)]
    rest = (index * 7919 + seed * 104_729 + 12_345_678) % 100_000_000
    number = f"{prefix}{rest:08d}"
    if number in TEST_PHONES:  # vanishingly rare; shift to a neighbour
        number = f"{prefix}{(rest + 1) % 100_000_000:08d}"
    return number


def _interests(rng: random.Random) -> tuple[str, ...]:
    keys = [c.key for c in CATEGORIES]
    count = 1 + (rng.random() < 0.6) + (rng.random() < 0.25)
    return tuple(rng.sample(keys, count))


def make_person(rng: random.Random, index: int, seed: int) -> Person:
    """Draw person number ``index`` (0-based) from ``rng``."""
    segment = _pick(rng, SEGMENTS)
    gender = "female" if rng.random() < 0.55 else "male"
    name = (
        rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.6 else "")
    )
    city = _pick(rng, CITIES)
    interests = _interests(rng)
    primary = _pick(rng, PLATFORMS)
    person = Person(
        index=index,
        segment=segment,
        interests=interests,
        platforms=(),
        anonymous_ids={},
        name=name,
        gender=gender,
        city=city,
    )
    number = index + 1
    if segment == "offline":
        person.phone = phone_of(index, seed)
        person.member_id = f"M{number:08d}"
        person.offline_shopper = True
    else:
        login_rate = {"loyal": 1.0, "regular": 0.97, "silent": 1.0, "browser": 0.30}[segment]
        if rng.random() < login_rate:
            person.user_id = f"u{number:08d}"
            person.member_id = f"M{number:08d}"
            if rng.random() < 0.85:
                person.phone = phone_of(index, seed)
            if rng.random() < 0.35:
                person.email = (
                    f"{'user' if gender == 'male' else 'hi'}{number}@{rng.choice(EMAIL_DOMAINS)}"
                )
        platforms = [primary]
        if person.logged_in and rng.random() < 0.3:
            platforms.append(rng.choice([p for p, _ in PLATFORMS if p != primary]))
        wecom_rate = {"loyal": 0.7, "regular": 0.5}.get(segment, 0.35)
        if person.logged_in and rng.random() < wecom_rate:
            person.external_userid = "wm" + _token(rng, 30)
            platforms.append("wecom")
        person.platforms = tuple(platforms)
        person.anonymous_ids = {p: _uuid(rng) for p in platforms}
        if "miniprogram" in platforms:
            person.openid = "o" + _token(rng, 27)
            person.unionid = "oU" + _token(rng, 26)
        if segment in ("loyal", "regular") and person.phone and rng.random() < 0.15:
            person.offline_shopper = True
        if segment == "silent":
            category = interests[0]
            items = ITEMS_BY_CATEGORY[category]
            person.silent_item = items[rng.randrange(len(items))]
        person.price_sensitive = rng.random() < (0.5 if segment == "silent" else 0.15)
    person.consent_marketing = rng.random() >= 0.04
    if (person.phone or person.external_userid) and (
        segment == "offline" or rng.random() < (0.95 if segment == "loyal" else 0.7)
    ):
        person.crm_id = f"CRM{number:08d}"
        person.crm_level = _level(rng, segment)
    if person.phone and person.consent_marketing and segment != "offline":
        person.campaign_group = "treatment" if rng.random() < 0.8 else "holdout"
        person.campaign_u = rng.random()
    return person


def _level(rng: random.Random, segment: str) -> str:
    if segment == "loyal":
        return "钻石会员" if rng.random() < 0.3 else "金卡会员"
    if segment == "regular":
        return "银卡会员" if rng.random() < 0.5 else "普通会员"
    return "普通会员"
