"""What the demo business sells: online courses and shop products, with Chinese names and prices.

The business is 知行优选, an online-course school with a small e-commerce shop. Every item belongs
to one category; a person's latent interests are categories, so browsing concentrates on them.
"""

from __future__ import annotations

from dataclasses import dataclass

BRAND = "知行优选"
CURRENCY = "CNY"
SITE = "https://www.zhixing-demo.cn"


@dataclass(frozen=True, slots=True)
class Category:
    """A category of the catalog: a stable key, its Chinese name, course or product."""

    key: str
    name: str
    kind: str  # "course" or "product"
    consumable: bool = False  # bought again and again (tea, snacks): drives repurchases


@dataclass(frozen=True, slots=True)
class Item:
    """One sellable item."""

    product_id: str
    sku: str
    name: str
    category: Category
    price: float

    @property
    def kind(self) -> str:
        return self.category.kind


CATEGORIES: tuple[Category, ...] = (
    Category("python", "编程与数据", "course"),
    Category("math_kids", "少儿数学", "course"),
    Category("english_kids", "少儿英语", "course"),
    Category("ielts", "留学语言", "course"),
    Category("office", "职场技能", "course"),
    Category("design", "设计创作", "course"),
    Category("tea", "茶饮", "product", consumable=True),
    Category("audio", "数码影音", "product"),
    Category("beauty", "美妆个护", "product", consumable=True),
    Category("baby", "母婴用品", "product", consumable=True),
    Category("books", "图书文具", "product"),
    Category("snacks", "休闲零食", "product", consumable=True),
)

_BY_KEY = {c.key: c for c in CATEGORIES}

_ITEMS_RAW: tuple[tuple[str, str, float], ...] = (
    ("python", "Python数据分析实战课", 399.0),
    ("python", "零基础Python入门", 199.0),
    ("python", "SQL数据库从入门到精通", 299.0),
    ("python", "机器学习算法精讲", 699.0),
    ("math_kids", "小学奥数思维训练", 1280.0),
    ("math_kids", "一年级数学启蒙营", 299.0),
    ("math_kids", "初中数学压轴题突破", 899.0),
    ("english_kids", "少儿英语自然拼读", 599.0),
    ("english_kids", "剑桥少儿英语KET备考", 1599.0),
    ("english_kids", "英文绘本精读营", 249.0),
    ("ielts", "雅思7分冲刺班", 3999.0),
    ("ielts", "托福100分全程班", 4599.0),
    ("ielts", "日语N2直通车", 1999.0),
    ("office", "Excel高效办公技巧", 99.0),
    ("office", "PPT商务演示设计", 129.0),
    ("office", "PMP项目管理认证班", 2980.0),
    ("design", "Photoshop零基础到精通", 299.0),
    ("design", "短视频剪辑与运营", 499.0),
    ("tea", "有机绿茶礼盒", 168.0),
    ("tea", "云南普洱熟茶饼", 238.0),
    ("tea", "武夷岩茶大红袍", 328.0),
    ("tea", "冷泡茶组合装", 59.9),
    ("audio", "蓝牙降噪耳机", 899.0),
    ("audio", "便携蓝牙音箱", 299.0),
    ("audio", "智能手环", 249.0),
    ("beauty", "氨基酸洁面乳", 89.0),
    ("beauty", "玻尿酸补水面膜", 129.0),
    ("beauty", "防晒霜SPF50", 159.0),
    ("baby", "婴儿纸尿裤", 139.0),
    ("baby", "儿童保温杯", 119.0),
    ("baby", "有机米粉", 78.0),
    ("books", "学霸错题本套装", 39.9),
    ("books", "儿童百科全书", 198.0),
    ("books", "钢笔书法字帖", 29.9),
    ("snacks", "每日坚果礼盒", 99.0),
    ("snacks", "手工牛轧糖", 49.9),
)


def _build_items() -> tuple[Item, ...]:
    items: list[Item] = []
    counters: dict[str, int] = {}
    for key, name, price in _ITEMS_RAW:
        category = _BY_KEY[key]
        n = counters.get(key, 0) + 1
        counters[key] = n
        prefix = "C" if category.kind == "course" else "P"
        product_id = f"{prefix}-{key}-{n:02d}"
        items.append(Item(product_id, f"SKU{len(items) + 1:04d}", name, category, price))
    return tuple(items)


ITEMS: tuple[Item, ...] = _build_items()
ITEMS_BY_CATEGORY: dict[str, tuple[Item, ...]] = {
    c.key: tuple(i for i in ITEMS if i.category.key == c.key) for c in CATEGORIES
}
ITEMS_BY_ID: dict[str, Item] = {i.product_id: i for i in ITEMS}
COURSE_CATEGORIES: tuple[Category, ...] = tuple(c for c in CATEGORIES if c.kind == "course")
PRODUCT_CATEGORIES: tuple[Category, ...] = tuple(c for c in CATEGORIES if c.kind == "product")

#: Search words per category (Products Searched ``query``).
SEARCH_TERMS: dict[str, tuple[str, ...]] = {
    "python": ("python", "数据分析", "sql", "编程入门"),
    "math_kids": ("奥数", "小学数学", "数学思维"),
    "english_kids": ("少儿英语", "自然拼读", "KET"),
    "ielts": ("雅思", "托福", "日语"),
    "office": ("excel", "ppt", "PMP"),
    "design": ("PS教程", "剪辑", "设计"),
    "tea": ("绿茶", "普洱", "茶叶礼盒"),
    "audio": ("降噪耳机", "蓝牙音箱", "手环"),
    "beauty": ("洗面奶", "面膜", "防晒"),
    "baby": ("纸尿裤", "米粉", "保温杯"),
    "books": ("字帖", "百科", "错题本"),
    "snacks": ("坚果", "牛轧糖", "零食"),
}

COUPONS: tuple[tuple[str, str, float], ...] = (
    ("CPN-NEW20", "新人立减20元", 20.0),
    ("CPN-50OFF", "满500减50", 50.0),
    ("CPN-COURSE100", "好课立减100元", 100.0),
)

STORES: dict[str, str] = {
    "上海": "上海南京西路店",
    "北京": "北京三里屯店",
    "杭州": "杭州湖滨店",
    "广州": "广州天河店",
    "深圳": "深圳万象城店",
    "成都": "成都太古里店",
}
