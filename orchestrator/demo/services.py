"""Demo data: "Stride Running", a running-shoe store whose customers are reminded when
their shoes are due (Alex the runner, from the product brief), in six time zones.

Everything is deterministic (fixed names, a seeded random generator) and loading
is idempotent: rows that exist are left alone, events carry client ids and
messages idempotency keys, so a second run changes nothing.

The journeys are JSON definition files under ``journeys/`` (what the journeys API
accepts), saved and activated through the journeys' own services; the rest is here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from channels.webhooks.processing import Inbound, handle_inbound
from journeys.models import Journey
from journeys.services import journey_activate, journey_save
from orchestrator.audience.models import Customer
from orchestrator.audience.services import EventInput, customer_upsert, events_record
from orchestrator.consent.models import ChannelPreference, ConsentRecord, Subscription, Topic
from orchestrator.delivery.models import FrequencyRule, Message, MessageTemplate, TemplateVariant
from orchestrator.delivery.services import message_create
from orchestrator.demo.broadcasts import load_newsletter
from orchestrator.demo.digests import load_order_digest
from orchestrator.demo.segments import load_segments

BRAND = "Stride Running"

SHOES = [
    ("Stride Cloudrunner 3", {"JPY": 16500, "USD": 140, "GBP": 125, "AUD": 220, "INR": 11999}),
    ("Stride Tempo Elite", {"JPY": 24200, "USD": 190, "GBP": 170, "AUD": 300, "INR": 17499}),
    ("Stride Daily 5", {"JPY": 12100, "USD": 110, "GBP": 95, "AUD": 170, "INR": 8999}),
    ("Stride Trail Ridge 2", {"JPY": 18700, "USD": 150, "GBP": 135, "AUD": 240, "INR": 12999}),
]

# (first, last, romanized first, romanized last): kanji names are what a Japanese customer sees.
JAPAN = [
    ("健太", "佐藤", "kenta", "sato"),
    ("美咲", "鈴木", "misaki", "suzuki"),
    ("翔太", "高橋", "shota", "takahashi"),
    ("陽菜", "田中", "hina", "tanaka"),
    ("大輝", "伊藤", "daiki", "ito"),
    ("さくら", "渡辺", "sakura", "watanabe"),
    ("拓海", "山本", "takumi", "yamamoto"),
    ("結衣", "中村", "yui", "nakamura"),
    ("蓮", "小林", "ren", "kobayashi"),
    ("葵", "加藤", "aoi", "kato"),
    ("悠真", "吉田", "yuma", "yoshida"),
    ("真央", "山田", "mao", "yamada"),
    ("颯太", "佐々木", "sota", "sasaki"),
    ("七海", "松本", "nanami", "matsumoto"),
]
CHICAGO = [
    "Jordan Lee",
    "Maria Garcia",
    "Tyler Brooks",
    "Emily Chen",
    "Marcus Johnson",
    "Hannah Miller",
    "Diego Ramirez",
]
NEW_YORK = [
    "Olivia Bennett",
    "Daniel Kim",
    "Sofia Rossi",
    "Ethan Walker",
    "Ava Thompson",
    "Noah Patel",
    "Grace O'Connor",
    "Liam Murphy",
]
LONDON = [
    "Oliver Hughes",
    "Amelia Clarke",
    "Harry Wilson",
    "Isla Campbell",
    "George Evans",
    "Poppy Turner",
    "Priya Shah",
]
SYDNEY = [
    "Jack Thompson",
    "Charlotte Nguyen",
    "Lachlan Smith",
    "Mia Wilson",
    "Cooper Davies",
    "Zoe Martin",
]
KOLKATA = [
    "Aarav Sharma",
    "Ananya Iyer",
    "Rohan Gupta",
    "Diya Reddy",
    "Vihaan Mehta",
    "Kavya Nair",
    "Arjun Singh",
]

TOPICS = [
    {
        "key": "order-updates",
        "name": "Order updates",
        "names": {"ja": "ご注文に関するお知らせ"},
        "description": "Order confirmations, shipping and delivery notices.",
        "kind": Topic.Kind.TRANSACTIONAL,
        "default_opt_in": True,
        "channels": ["email", "sms", "whatsapp", "line"],
    },
    {
        "key": "replenishment",
        "name": "Replacement reminders",
        "names": {"ja": "シューズの買い替えのお知らせ"},
        "description": "A reminder when your running shoes are due to be replaced (~600 km).",
        "kind": Topic.Kind.MARKETING,
        "default_opt_in": False,
        "channels": ["email", "sms", "whatsapp", "line"],
    },
    {
        "key": "appointments",
        "name": "Fitting appointments",
        "names": {"ja": "フィッティングのご予約"},
        "description": "Reminders of a gait analysis and fitting you booked in store.",
        "kind": Topic.Kind.TRANSACTIONAL,
        "default_opt_in": True,
        "channels": ["email", "sms", "whatsapp", "line"],
        # A reminder is welcome, but not at 3 a.m.: it waits for the end of quiet hours.
        "quiet_hours": Topic.QuietHours.RESPECT,
    },
    {
        "key": "promotions",
        "name": "Offers and new releases",
        "names": {"ja": "セールと新商品のお知らせ"},
        "description": "Sales, new shoe releases and race-day offers.",
        "kind": Topic.Kind.MARKETING,
        "default_opt_in": False,
        "channels": ["email", "line", "whatsapp"],
    },
]

_ORDER_HTML_EN = """<p>Hi {{ customer.first_name | default: "there" }},</p>
<p>Thanks for your order <strong>{{ data.order_id }}</strong>:
{{ data.product }} ({{ data.total }}).</p>
<p>We will let you know when it ships.</p>
<p>{{ brand.name }}</p>"""
_ORDER_HTML_JA = """<p>{{ customer.first_name | default: "お客" }}様</p>
<p>ご注文 <strong>{{ data.order_id }}</strong>
({{ data.product }}、{{ data.total }})を承りました。</p>
<p>発送しましたら改めてお知らせします。</p>
<p>{{ brand.name }}</p>"""
_REPLENISH_HTML_EN = """<p>Hi {{ customer.first_name | default: "there" }},</p>
<p>Your {{ customer.favourite_shoe | default: "running shoes" }} from
{{ data.last_order_date | default: "your last order" }} have covered around 600 km by now,
when cushioning starts to fade.</p>
<p><a href="{{ data.reorder_url | default: "https://stride.example.com/reorder" }}">Reorder
in size {{ customer.shoe_size | default: "your size" }}</a></p>
<p>{{ brand.name }}</p>
<p><small><a href="{{ unsubscribe_url }}">Unsubscribe</a> ·
<a href="{{ preferences_url }}">Choose what we send you</a></small></p>"""
_REPLENISH_HTML_JA = """<p>{{ customer.first_name | default: "お客" }}様</p>
<p>{{ data.last_order_date | default: "前回" }}にご購入の
{{ customer.favourite_shoe | default: "シューズ" }}は、
そろそろ約600kmに達する頃です。クッション性が落ちる前に買い替えはいかがですか。</p>
<p><a href="{{ data.reorder_url | default: "https://stride.example.com/reorder" }}">
{{ customer.shoe_size | default: "" }} サイズで再注文する</a></p>
<p>{{ brand.name }}</p>
<p><small><a href="{{ unsubscribe_url }}">配信停止</a> ·
<a href="{{ preferences_url }}">配信設定</a></small></p>"""

# Every marketing variant carries a visible opt-out link (refused at save without one):
# email the one-click unsubscribe and the preference center, SMS and chat a short link.
OPT_OUT_EN = (
    "\n\nUnsubscribe: {{ unsubscribe_url }}\nChoose what we send you: {{ preferences_url }}"
)
OPT_OUT_JA = "\n\n配信停止:{{ unsubscribe_url }}\n配信設定:{{ preferences_url }}"
OPT_OUT_HTML_EN = (
    '<p><small><a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
    '<a href="{{ preferences_url }}">Choose what we send you</a></small></p>'
)
PREFS_EN = "\nOpt out: {{ preferences_url }}"
PREFS_JA = "\n配信設定:{{ preferences_url }}"

#: template key -> (name, topic key, {(channel, locale): (subject, body, html)})
TIME = "{{ customer.fitting_time | default: '--:--' }}"
STORE = "{{ brand.name }} {{ customer.fitting_store | default: 'store' }}"
STORE_JA = "{{ customer.fitting_store | default: '店舗' }}"


TEMPLATES: dict[str, tuple[str, str, dict[tuple[str, str], tuple[str, str, str]]]] = {
    "order-confirmation": (
        "Order confirmation",
        "order-updates",
        {
            ("email", "en"): (
                "Your {{ brand.name }} order {{ data.order_id }} is confirmed",
                "Hi {{ customer.first_name | default: 'there' }},\n\n"
                "Thanks for your order {{ data.order_id }}: "
                "{{ data.product }} ({{ data.total }}).\n"
                "We will let you know when it ships.\n\n{{ brand.name }}",
                _ORDER_HTML_EN,
            ),
            ("email", "ja"): (
                "【{{ brand.name }}】ご注文 {{ data.order_id }} を承りました",
                "{{ customer.first_name | default: 'お客' }}様\n\n"
                "ご注文 {{ data.order_id }}({{ data.product }}、{{ data.total }})を承りました。\n"
                "発送しましたら改めてお知らせします。\n\n{{ brand.name }}",
                _ORDER_HTML_JA,
            ),
            ("sms", "en"): (
                "",
                "{{ brand.name }}: order {{ data.order_id }} confirmed - {{ data.product }}, "
                "{{ data.total }}. We'll text you when it ships.",
                "",
            ),
            ("sms", "ja"): (
                "",
                "{{ brand.name }}:ご注文 {{ data.order_id }}({{ data.product }})を承りました。",
                "",
            ),
            ("line", "ja"): (
                "",
                "{{ customer.first_name | default: 'お客' }}様、ご注文ありがとうございます!\n"
                "注文番号:{{ data.order_id }}\n商品:{{ data.product }}\n合計:{{ data.total }}",
                "",
            ),
            ("line", "en"): (
                "",
                "Thanks {{ customer.first_name | default: 'runner' }}! Order {{ data.order_id }}: "
                "{{ data.product }}, {{ data.total }}.",
                "",
            ),
            ("whatsapp", "en"): (
                "",
                "Hi {{ customer.first_name | default: 'there' }}, your {{ brand.name }} order "
                "{{ data.order_id }} ({{ data.product }}, {{ data.total }}) is confirmed.",
                "",
            ),
            ("whatsapp", "ja"): (
                "",
                "{{ customer.first_name | default: 'お客' }}様、ご注文 {{ data.order_id }}"
                "({{ data.product }})を承りました。",
                "",
            ),
        },
    ),
    "replenishment-reminder": (
        "Shoe replacement reminder",
        "replenishment",
        {
            ("email", "en"): (
                "{{ customer.first_name | default: 'Runner' }}, time for fresh "
                "{{ customer.favourite_shoe | default: 'shoes' }}?",
                "Hi {{ customer.first_name | default: 'there' }},\n\n"
                "Your {{ customer.favourite_shoe | default: 'running shoes' }} have covered "
                "around 600 km by now, when cushioning starts to fade.\n"
                "Reorder in size {{ customer.shoe_size | default: 'your size' }}: "
                "{{ data.reorder_url | default: 'https://stride.example.com/reorder' }}\n\n"
                "{{ brand.name }}" + OPT_OUT_EN,
                _REPLENISH_HTML_EN,
            ),
            ("email", "ja"): (
                "{{ customer.first_name | default: 'お客' }}様、そろそろシューズの替えどきです",
                "{{ customer.first_name | default: 'お客' }}様\n\n"
                "ご愛用の{{ customer.favourite_shoe | default: 'シューズ' }}は"
                "約600kmに達する頃です。\n"
                "再注文はこちら:"
                "{{ data.reorder_url | default: 'https://stride.example.com/reorder' }}\n\n"
                "{{ brand.name }}" + OPT_OUT_JA,
                _REPLENISH_HTML_JA,
            ),
            ("line", "ja"): (
                "",
                "{{ customer.first_name | default: 'お客' }}様、"
                "{{ customer.favourite_shoe | default: 'シューズ' }}の替えどきが近づいています👟\n"
                "同じサイズ({{ customer.shoe_size | default: '-' }})で再注文:"
                "{{ data.reorder_url | default: 'https://stride.example.com/reorder' }}" + PREFS_JA,
                "",
            ),
            ("line", "en"): (
                "",
                "{{ customer.first_name | default: 'Runner' }}, your "
                "{{ customer.favourite_shoe | default: 'shoes' }} are due for replacement. "
                "Reorder: {{ data.reorder_url | default: 'https://stride.example.com/reorder' }}"
                + PREFS_EN,
                "",
            ),
            ("whatsapp", "en"): (
                "",
                "Hi {{ customer.first_name | default: 'there' }}! Your "
                "{{ customer.favourite_shoe | default: 'running shoes' }} are near 600 km. "
                "Reorder in size {{ customer.shoe_size | default: 'your size' }}: "
                "{{ data.reorder_url | default: 'https://stride.example.com/reorder' }}" + PREFS_EN,
                "",
            ),
            ("sms", "en"): (
                "",
                "{{ brand.name }}: your {{ customer.favourite_shoe | default: 'shoes' }} are due "
                "for replacement. Reorder: "
                "{{ data.reorder_url | default: 'https://stride.example.com/reorder' }}" + PREFS_EN,
                "",
            ),
        },
    ),
    # Attributes the store sets when a fitting is booked: fitting_at (ISO), and for the
    # message fitting_time and fitting_store (with defaults, so a preview always renders).
    "fitting-reminder": (
        "Fitting appointment: the day before",
        "appointments",
        {
            ("email", "en"): (
                "Your {{ brand.name }} fitting is tomorrow at " + TIME,
                "Hi {{ customer.first_name | default: 'there' }},\n\n"
                "See you tomorrow at " + TIME + " at " + STORE + " for your gait analysis "
                "and fitting. Bring the shoes you run in now.\n\n"
                "Reply 1 to confirm or 2 if you need another time.",
                "",
            ),
            ("sms", "en"): (
                "",
                "{{ brand.name }}: {{ customer.first_name | default: 'hi' }}, your fitting is "
                "tomorrow " + TIME + " at " + STORE + ". Reply 1 to confirm, 2 to change.",
                "",
            ),
            ("line", "ja"): (
                "",
                "{{ customer.first_name | default: 'お客' }}様、明日 "
                + TIME
                + " に"
                + STORE_JA
                + "で足型計測とフィッティングのご予約があります。"
                "ご確認は「1」、変更は「2」とご返信ください。",
                "",
            ),
            ("email", "ja"): (
                "【{{ brand.name }}】明日はフィッティングのご予約日です",
                "{{ customer.first_name | default: 'お客' }}様\n\n明日 "
                + TIME
                + " に"
                + STORE_JA
                + "でお待ちしております。",
                "",
            ),
        },
    ),
    "fitting-soon": (
        "Fitting appointment: two hours before",
        "appointments",
        {
            ("email", "en"): (
                "See you at " + TIME,
                "Hi {{ customer.first_name | default: 'there' }}, your fitting at "
                + STORE
                + " starts at "
                + TIME
                + ", in about two hours.",
                "",
            ),
            ("sms", "en"): (
                "",
                "{{ brand.name }}: see you at " + TIME + ", {{ customer.first_name }}! " + STORE,
                "",
            ),
            ("line", "ja"): (
                "",
                "{{ customer.first_name | default: 'お客' }}様、まもなく "
                + TIME
                + " から"
                + STORE_JA
                + "でフィッティングです。",
                "",
            ),
            ("email", "ja"): (
                "【{{ brand.name }}】本日 " + TIME + " にお待ちしております",
                "{{ customer.first_name | default: 'お客' }}様、"
                + STORE_JA
                + "でお待ちしております。",
                "",
            ),
        },
    ),
    "spring-sale": (
        "Spring race season sale",
        "promotions",
        {
            ("email", "en"): (
                "Race season: 20% off {{ data.collection | default: 'trail shoes' }}",
                "Hi {{ customer.first_name | default: 'there' }},\n\n"
                "Spring races are coming. Take 20% off "
                "{{ data.collection | default: 'trail shoes' }} until "
                "{{ data.ends_on | default: 'Sunday' }}.\n\n{{ brand.name }}" + OPT_OUT_EN,
                "<p>Hi {{ customer.first_name | default: 'there' }},</p>"
                "<p>Take <strong>20% off</strong> {{ data.collection | default: 'trail shoes' }} "
                "until {{ data.ends_on | default: 'Sunday' }}.</p><p>{{ brand.name }}</p>"
                + OPT_OUT_HTML_EN,
            ),
            ("email", "ja"): (
                "【{{ brand.name }}】レースシーズン応援セール 20%オフ",
                "{{ customer.first_name | default: 'お客' }}様\n\n"
                "春のレースに向けて、{{ data.collection | default: 'トレイルシューズ' }}が"
                "{{ data.ends_on | default: '日曜日' }}まで20%オフです。\n\n{{ brand.name }}"
                + OPT_OUT_JA,
                "",
            ),
            ("line", "ja"): (
                "",
                "{{ customer.first_name | default: 'お客' }}様、🏃 春のレース応援セール!"
                "{{ data.collection | default: 'トレイルシューズ' }}が"
                "20%オフ({{ data.ends_on | default: '日曜日' }}まで)" + PREFS_JA,
                "",
            ),
            ("whatsapp", "en"): (
                "",
                "Hi {{ customer.first_name | default: 'there' }}! "
                "Race season sale at {{ brand.name }}: 20% off "
                "{{ data.collection | default: 'trail shoes' }} until "
                "{{ data.ends_on | default: 'Sunday' }}." + PREFS_EN,
                "",
            ),
        },
    ),
}


@dataclass
class DemoSummary:
    customers: int = 0
    topics: int = 0
    frequency_rules: int = 0
    templates: int = 0
    variants: int = 0
    consent_records: int = 0
    events: int = 0
    messages: int = 0
    inbound: int = 0
    journeys: int = 0

    def __str__(self) -> str:
        created = ", ".join(f"{getattr(self, f.name)} {f.name}" for f in fields(self))
        return f"created {created}"

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class DemoCustomer:
    external_id: str
    email: str
    phone: str
    whatsapp: str
    line_user_id: str
    locale: str
    timezone: str
    currency: str
    attributes: dict
    channel_order: list[str]
    quiet_hours: bool
    replenishment_channels: list[str]
    promotions_channels: list[str]
    orders: list[dict]


def _line_id(external_id: str) -> str:
    # LINE user ids are "U" + 32 hex digits; derived, so reloading gives the same id.
    return "U" + hashlib.sha256(f"line:{external_id}".encode()).hexdigest()[:32]


def _customers(today: dt.date) -> list[DemoCustomer]:
    """The 50 demo customers. ``today`` anchors order dates and replacement predictions."""
    rng = random.Random(20250417)  # noqa: S311 - fixed seed: the same customers every time
    people: list[DemoCustomer] = []
    order_no = 10400

    def build(
        *,
        external_id: str,
        first: str,
        last: str,
        email_local: str,
        locale: str,
        tz: str,
        currency: str,
        phone: str = "",
        whatsapp: str = "",
        line: bool = False,
        channel_order: list[str] | None = None,
        shoe_size: str,
        city: str,
        opted_in: bool | None = None,
    ) -> None:
        nonlocal order_no
        shoe, prices = rng.choice(SHOES)
        orders = []
        # One to three orders over the last ~8 months, oldest first.
        for days_ago in sorted(rng.sample(range(20, 240), rng.randint(1, 3)), reverse=True):
            order_no += 1
            product, product_prices = (shoe, prices) if rng.random() < 0.7 else rng.choice(SHOES)
            orders.append(
                {
                    "order_id": f"SR-{order_no}",
                    "product": product,
                    "price": product_prices[currency],
                    "currency": currency,
                    "size": shoe_size,
                    "date": today - dt.timedelta(days=days_ago),
                }
            )
        last_order = orders[-1]["date"]
        channels = [c for c in (channel_order or []) if c]
        reachable = (
            ["email"]
            + (["sms"] if phone else [])
            + (["line"] if line else [])
            + (["whatsapp"] if whatsapp else [])
        )
        # Most customers ticked "remind me when my shoes are due" on their main channels.
        opted_replenishment = rng.random() < 0.8
        if opted_in is not None:
            opted_replenishment = opted_in
        replenishment = (
            [c for c in (channels or ["email"]) if c in reachable] if opted_replenishment else []
        )
        promotions = ["email"] if rng.random() < 0.4 else []
        if line and promotions and rng.random() < 0.5:
            promotions.append("line")
        people.append(
            DemoCustomer(
                external_id=external_id,
                email=f"{email_local}@example.com",
                phone=phone,
                whatsapp=whatsapp,
                line_user_id=_line_id(external_id) if line else "",
                locale=locale,
                timezone=tz,
                currency=currency,
                attributes={
                    "first_name": first,
                    "last_name": last,
                    "city": city,
                    "favourite_shoe": shoe,
                    "shoe_size": shoe_size,
                    "total_orders": len(orders),
                    "last_order_date": last_order.isoformat(),
                    # ~600 km at ~35 km a week: about 120 days after the last pair.
                    "predicted_replenishment_date": (
                        last_order + dt.timedelta(days=120)
                    ).isoformat(),
                },
                channel_order=channels,
                quiet_hours=rng.random() < 0.3,
                replenishment_channels=replenishment,
                promotions_channels=promotions,
                orders=orders,
            )
        )

    # Alex, the runner of the brief: email first, texts welcome, in Chicago.
    build(
        external_id="alex",
        first="Alex",
        last="Morgan",
        email_local="alex",
        locale="en",
        tz="America/Chicago",
        currency="USD",
        phone="+13125550100",
        channel_order=["email", "sms"],
        shoe_size="US 10",
        city="Chicago",
        opted_in=True,
    )
    for i, (first, last, r_first, r_last) in enumerate(JAPAN):
        has_line = i not in (4, 11)
        build(
            external_id=f"{r_first}-{r_last}",
            first=first,
            last=last,
            email_local=f"{r_first}.{r_last}",
            locale="ja",
            tz="Asia/Tokyo",
            currency="JPY",
            phone=f"+8190{1200 + i:04d}{3400 + i * 7:04d}" if i % 2 == 0 else "",
            line=has_line,
            # Japanese customers mostly live in LINE; email is the fallback.
            channel_order=["line", "email"] if has_line else ["email"],
            shoe_size=f"{rng.choice([23.5, 24.0, 24.5, 25.5, 26.0, 26.5, 27.0, 27.5])} cm",
            city=rng.choice(["Tokyo", "Yokohama", "Osaka", "Fukuoka", "Sapporo"]),
            opted_in=True if i == 0 else None,  # 健太 gets the journey's LINE reminder
        )
    regions = [
        (CHICAGO, "America/Chicago", "Chicago", "USD", "+1312555{:04d}", 101),
        (NEW_YORK, "America/New_York", "New York", "USD", "+1212555{:04d}", 120),
        (LONDON, "Europe/London", "London", "GBP", "+447400123{:03d}", 440),
        (SYDNEY, "Australia/Sydney", "Sydney", "AUD", "+61491570{:03d}", 110),
        (KOLKATA, "Asia/Kolkata", "Kolkata", "INR", "+9198123{:05d}", 45600),
    ]
    for names, tz, city, currency, phone_pattern, phone_base in regions:
        for i, full in enumerate(names):
            first, last = full.split(" ", 1)
            slug = f"{first}-{last}".lower().replace("'", "")
            phone = phone_pattern.format(phone_base + i) if i % 3 != 2 else ""
            # WhatsApp is the everyday app in India and common in the UK and Australia.
            uses_whatsapp = bool(phone) and (
                tz == "Asia/Kolkata" or (tz in ("Europe/London", "Australia/Sydney") and i % 2)
            )
            if uses_whatsapp:
                order = ["whatsapp", "email"]
            elif phone and tz.startswith("America/") and i % 2:
                order = ["sms", "email"]
            else:
                order = []  # no stated preference: email first by default
            size_unit = "UK" if tz == "Europe/London" else "US"
            build(
                external_id=slug,
                first=first,
                last=last,
                email_local=slug.replace("-", "."),
                locale="en",
                tz=tz,
                currency=currency,
                phone=phone,
                whatsapp=phone if uses_whatsapp else "",
                channel_order=order,
                shoe_size=f"{size_unit} {rng.choice([6, 7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5, 11])}",
                city=city,
            )
    # Alex and Kenta buy the same shoe on a steady cycle: their own median interval (140
    # and 120 days) puts their next pair about ten days out, so the replenishment journey
    # reminds them as soon as the platform starts.
    for i, person in enumerate(people):
        cycle = {"alex": (140, 131), "kenta-sato": (120, 111)}.get(person.external_id)
        if cycle is None:
            continue
        every, last = cycle
        first = person.orders[-1]
        orders = [
            {
                **first,
                "order_id": f"{first['order_id']}-{n}",
                "date": today - dt.timedelta(days=last + every * n),
            }
            for n in (2, 1)
        ]
        people[i] = replace(
            person, orders=[*orders, {**first, "date": today - dt.timedelta(days=last)}]
        )
    return people


#: Who has a fitting booked, in which store, and how long from loading the demo: just
#: under 24 hours, so the day-before reminder goes out within a minute of starting.
FITTINGS = {
    "maria-garcia": ("Wicker Park", dt.timedelta(hours=23, minutes=57)),
    "misaki-suzuki": ("渋谷店", dt.timedelta(hours=23, minutes=58)),
    "alex": ("Lincoln Park", dt.timedelta(days=3, hours=2)),
}


def _with_fittings(people: list[DemoCustomer], now: dt.datetime) -> list[DemoCustomer]:
    from zoneinfo import ZoneInfo

    out = []
    for person in people:
        booked = FITTINGS.get(person.external_id)
        if booked is not None:
            store, ahead = booked
            at = (
                (now + ahead).replace(second=0, microsecond=0).astimezone(ZoneInfo(person.timezone))
            )
            person = replace(
                person,
                attributes={
                    **person.attributes,
                    "fitting_at": at.isoformat(),
                    "fitting_time": at.strftime("%H:%M"),
                    "fitting_store": store,
                },
            )
        out.append(person)
    return out


def _money(amount: int, currency: str) -> str:
    symbols = {"JPY": "¥", "USD": "$", "GBP": "£", "AUD": "A$", "INR": "₹"}
    value = f"{amount:,}" if currency in ("JPY", "INR") else f"{Decimal(amount):,.2f}"
    return f"{symbols.get(currency, '')}{value}"


def _ensure_topics(summary: DemoSummary) -> dict[str, Topic]:
    topics = {}
    for spec in TOPICS:
        topic, created = Topic.objects.get_or_create(key=spec["key"], defaults=spec)
        summary.topics += created
        topics[topic.key] = topic
    return topics


#: Fatigue rules a running store starts with: marketing stays occasional, per customer.
FREQUENCY_RULES = [
    {
        "key": "marketing-weekly",
        "name": "At most 3 marketing messages a week",
        "description": "Counted per calendar week in each customer's own time zone.",
        "kind": "cap",
        "scope": "global",
        "limit": 3,
        "calendar": "week",
        "applies_to": "marketing",
        "action": "defer",
    },
    {
        "key": "promotions-gap",
        "name": "Two days between offers",
        "description": "Offers never arrive on consecutive days.",
        "kind": "gap",
        "scope": "topic",
        "topic": "promotions",
        "limit": 1,
        "window": dt.timedelta(days=2),
        "applies_to": "marketing",
        "action": "defer",
    },
]


def _ensure_rules(topics: dict[str, Topic], summary: DemoSummary) -> None:
    for spec in FREQUENCY_RULES:
        defaults = dict(spec)
        key = defaults.pop("key")
        if "topic" in defaults:
            defaults["topic"] = topics[defaults["topic"]]
        _rule, created = FrequencyRule.objects.get_or_create(key=key, defaults=defaults)
        summary.frequency_rules += created


def _ensure_templates(topics: dict[str, Topic], summary: DemoSummary) -> dict[str, MessageTemplate]:
    templates = {}
    for key, (name, topic_key, variants) in TEMPLATES.items():
        template, created = MessageTemplate.objects.get_or_create(
            key=key, defaults={"name": name, "topic": topics[topic_key]}
        )
        summary.templates += created
        for (channel, locale), (subject, body, html) in variants.items():
            _variant, created = TemplateVariant.objects.get_or_create(
                template=template,
                channel=channel,
                locale=locale,
                defaults={"subject": subject, "body": body, "html": html},
            )
            summary.variants += created
        templates[key] = template
    return templates


def _record_consent(
    customer: Customer, topic: Topic, channels: list[str], summary: DemoSummary
) -> None:
    # Written directly: there is no consent service yet for opt-ins captured at checkout,
    # and the demo must state them the way an import would (ledger row + current state).
    for channel in channels:
        Subscription.objects.update_or_create(
            customer=customer,
            topic=topic,
            channel=channel,
            defaults={"status": Subscription.Status.SUBSCRIBED},
        )
        ConsentRecord.objects.create(
            customer=customer,
            topic=topic,
            channel=channel,
            action=ConsentRecord.Action.OPT_IN,
            source=ConsentRecord.Source.IMPORT,
            evidence={
                "capture": "checkbox at checkout",
                "wording": f"Send me {topic.name.lower()} by {channel}",
                "imported_from": f"{BRAND} demo data",
            },
        )
        summary.consent_records += 1


def _midday(day: dt.date, tz_name: str) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime(day.year, day.month, day.day, 12, 30, tzinfo=ZoneInfo(tz_name))


#: (external_id, template, channel) for the messages queued so the dev inbox has something.
#: Replenishment reminders are not here: the shoe-replenishment journey sends Alex's and
#: Kenta's as soon as it starts, and a second copy queued here reached them twice.
DEMO_SENDS = [
    ("alex", "order-confirmation", "email"),
    ("kenta-sato", "order-confirmation", "preferred"),
    ("aarav-sharma", "order-confirmation", "preferred"),
    ("maria-garcia", "order-confirmation", "sms"),
    ("oliver-hughes", "order-confirmation", "email"),
    ("misaki-suzuki", "order-confirmation", "line"),
]


@transaction.atomic
def database_has_customers() -> bool:
    """Whether anyone is in the database already (then ``manage.py dev`` loads no demo)."""
    return Customer.objects.exists()


def load_demo(*, today: dt.date | None = None) -> DemoSummary:
    """Load the Stride Running demo; safe to run again (existing rows are left as they are)."""
    summary = DemoSummary()
    today = today or timezone.localdate()
    topics = _ensure_topics(summary)
    _ensure_rules(topics, summary)
    templates = _ensure_templates(topics, summary)

    people = _with_fittings(_customers(today), timezone.now())
    existing = set(
        Customer.objects.filter(external_id__in=[p.external_id for p in people]).values_list(
            "external_id", flat=True
        )
    )
    events: list[EventInput] = []
    for person in people:
        if person.external_id in existing:
            continue
        customer, _created = customer_upsert(
            external_id=person.external_id,
            email=person.email,
            phone=person.phone,
            whatsapp=person.whatsapp,
            line_user_id=person.line_user_id,
            locale=person.locale,
            timezone=person.timezone,
            attributes=person.attributes,
        )
        summary.customers += 1
        if person.channel_order or person.quiet_hours:
            ChannelPreference.objects.get_or_create(
                customer=customer,
                defaults={
                    "channel_order": person.channel_order,
                    "quiet_hours_start": dt.time(22, 0) if person.quiet_hours else None,
                    "quiet_hours_end": dt.time(7, 0) if person.quiet_hours else None,
                },
            )
        _record_consent(customer, topics["replenishment"], person.replenishment_channels, summary)
        _record_consent(customer, topics["promotions"], person.promotions_channels, summary)
        for order in person.orders:
            events.append(
                EventInput(
                    customer=person.external_id,
                    name="order.completed",
                    properties={
                        "order_id": order["order_id"],
                        "product": order["product"],
                        "price": order["price"],
                        "currency": order["currency"],
                        "size": order["size"],
                    },
                    occurred_at=_midday(order["date"], person.timezone),
                    event_id=order["order_id"],
                )
            )
    if events:
        summary.events = events_record(events, source="demo").accepted

    by_id = {p.external_id: p for p in people}
    customers = Customer.objects.select_related("preference").in_bulk(
        {e for e, _t, _c in DEMO_SENDS}, field_name="external_id"
    )
    keys = {f"demo:{template}:{external_id}" for external_id, template, _c in DEMO_SENDS}
    done = set(
        Message.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True)
    )
    for external_id, template_key, channel in DEMO_SENDS:
        key = f"demo:{template_key}:{external_id}"
        customer = customers.get(external_id)
        if key in done or customer is None:
            continue
        person = by_id[external_id]
        last_order = person.orders[-1]
        data = {
            "order_id": last_order["order_id"],
            "product": last_order["product"],
            "total": _money(last_order["price"], last_order["currency"]),
            "last_order_date": last_order["date"].isoformat(),
            "reorder_url": f"https://stride.example.com/reorder/{last_order['order_id']}",
        }
        message_create(
            customer=customer,
            template=templates[template_key],
            channel=channel,
            data=data,
            priority=7 if template_key == "order-confirmation" else 3,
            idempotency_key=key,
            source=Message.Source.DEMO,
        )
        summary.messages += 1
    summary.inbound = _inbound_examples(people)
    load_segments()
    summary.journeys = _ensure_journeys()
    load_order_digest(skip={external_id for external_id, _t, _c in DEMO_SENDS})
    load_newsletter(today=today)
    return summary


#: The demo's journeys: one file each, in the JSON definition the journeys API takes
#: and the admin exports (``journeys.definition`` validates it on save).
JOURNEYS_DIR = Path(__file__).resolve().parent / "journeys"


def demo_journeys() -> list[dict]:
    """The journey definitions under ``journeys/``, in file-name order."""
    return [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(JOURNEYS_DIR.glob("*.json"))
    ]


def _ensure_journeys() -> int:
    created = 0
    for definition in demo_journeys():
        if Journey.objects.filter(key=definition["key"]).exists():
            continue
        journey_activate(journey=journey_save(definition))
        created += 1
    return created


def _inbound_examples(people: list[DemoCustomer]) -> int:
    """What customers wrote back: Alex's reply about the fit (a ``message.replied``
    event for journeys), and one Japanese customer's 配信停止 on LINE (a channel-wide
    marketing opt-out in the consent ledger). Recorded once, through the same code
    the webhooks use."""
    line_people = [p for p in people if p.line_user_id]
    examples = [
        ("alex", "sms", "+13125550100", "The arch didn't fit, the Pegasus felt better."),
    ]
    if len(line_people) > 2:
        examples.append(
            (line_people[2].external_id, "line", line_people[2].line_user_id, "配信停止")
        )
    created = 0
    for external_id, channel, address, text in examples:
        row = handle_inbound(
            Inbound(
                provider="twilio" if channel == "sms" else "line",
                channel=channel,
                provider_message_id=f"demo-{external_id}-{channel}",
                from_address=address,
                to_address="",
                body=text,
                received_at=timezone.now() - dt.timedelta(hours=3),
            )
        )
        created += row is not None
    return created
