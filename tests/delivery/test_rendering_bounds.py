"""Rendering's bounds and its equivalence with Liquid as shipped.

The bounded environment renders through its own template class (the render arguments
are the globals themselves, the output limit counts ASCII pieces by length): what it
renders and where it stops must be what Liquid itself renders and where it stops.
"""

from __future__ import annotations

import pytest
from liquid import Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError

from orchestrator.delivery.rendering import ENV, HTML_ENV, TemplateProblem, render_string

LIMIT = ENV.output_stream_limit

CONTEXT = {
    "customer": {"first_name": "Aki", "tier": "gold", "points": 1200, "city": "Sapporo"},
    "data": {
        "headline": "first snow <sale>",
        "threshold": 50,
        "total": 132.5,
        "items": [{"name": "Trail shoe", "price": 120}, {"name": "Socks & more", "price": 12.5}],
    },
    "brand": {"name": "Stride"},
    "unsubscribe_url": "https://example.com/u/abc",
}

TEMPLATES = [
    "{{ customer.first_name | capitalize }}, {{ data.headline }}",
    "Hi {{ customer.nickname | default: 'there' }},\n{% if customer.tier == 'gold' %}"
    "Free shipping over {{ data.threshold }}.{% endif %}\n"
    "{% for item in data.items %}- {{ item.name }}: {{ item.price | times: 1.1 | round: 2 }}\n"
    "{% endfor %}Total {{ data.total }} · {{ brand.name }}",
    "{{ customer.first_name }}様 {% for item in data.items %}・{{ item.name }} {{ item.price }}円"
    "{% endfor %}{% assign n = data.items | size %}{{ n }}点",
    "{% capture greeting %}Hello {{ customer.first_name }}{% endcapture %}{{ greeting | upcase }}"
    "{% case customer.tier %}{% when 'gold' %} ★{% else %} -{% endcase %}",
    '<p>{{ data.headline }}</p><a href="{{ unsubscribe_url }}">{{ brand.name }}</a>',
]


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize("source", TEMPLATES)
def test_renders_exactly_as_liquid_itself(source, html):
    plain = Environment(undefined=StrictDefaultUndefined, autoescape=html)
    expected = plain.from_string(source).render(**CONTEXT)

    assert render_string(source, CONTEXT, field="body", html=html) == expected


def test_an_undefined_variable_is_still_a_problem_naming_it():
    with pytest.raises(TemplateProblem) as problem:
        render_string("Hi {{ customer.nickname }}", CONTEXT, field="body")

    assert problem.value.undefined == "customer.nickname"


def test_output_up_to_the_limit_renders_and_one_byte_more_is_refused():
    exactly = "{% for i in (1.." + str(LIMIT // 100) + ") %}{{ data.chunk }}{% endfor %}"
    context = {"data": {"chunk": "x" * 100}}
    assert len(render_string(exactly, context, field="body")) == LIMIT

    with pytest.raises(TemplateProblem, match="limit"):
        render_string(exactly + "!", context, field="body")


def test_the_limit_counts_utf8_bytes_as_liquid_does():
    # 70,000 characters, 210,000 bytes: over a 200,000 limit that counts bytes.
    source = "{% for i in (1..700) %}{{ data.chunk }}{% endfor %}"
    context = {"data": {"chunk": "あ" * 100}}
    with pytest.raises(TemplateProblem, match="limit"):
        render_string(source, context, field="body")

    plain = Environment(undefined=StrictDefaultUndefined)
    plain.output_stream_limit = LIMIT
    with pytest.raises(LiquidError, match="limit"):
        plain.from_string(source).render(**context)


def test_a_runaway_loop_is_refused():
    with pytest.raises(TemplateProblem):
        render_string("{% for i in (1..100000) %}{% endfor %}", {}, field="body")


def test_both_environments_use_the_bounded_template():
    for env in (ENV, HTML_ENV):
        template = env.from_string("{{ x }}")
        assert template.render(x="<b>") == ("&lt;b&gt;" if env is HTML_ENV else "<b>")
