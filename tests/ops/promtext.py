"""A strict parser of the Prometheus text exposition format 0.0.4, for the tests.

Stricter than Prometheus itself where this project's output should be: every family
has exactly one ``# HELP`` and one ``# TYPE`` line before its samples, no other
comments, no timestamps, no duplicate series, sample names that belong to their
family (``_bucket``/``_sum``/``_count`` only for histograms), histogram buckets with
an ``le`` label, cumulative, ending in ``+Inf`` equal to ``_count``, and counters
never negative. Any violation raises :class:`FormatError` naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_HELP = re.compile(rf"# HELP ({_NAME}) (.*)")
_TYPE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)")
_SAMPLE = re.compile(
    rf"({_NAME})(?:\{{((?:{_LABEL_NAME}={_LABEL_VALUE})(?:,{_LABEL_NAME}={_LABEL_VALUE})*)?\}})?"
    r" (\S+)"
)
_LABEL = re.compile(rf"({_LABEL_NAME})=({_LABEL_VALUE})")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN)")


class FormatError(AssertionError):
    pass


@dataclass
class Family:
    name: str
    type: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, name: str | None = None, **labels: str) -> float | None:
        """The value of the sample with exactly these labels, or None if there is none."""
        for sample_name, sample_labels, value in self.samples:
            if sample_name == (name or self.name) and sample_labels == labels:
                return value
        return None


@dataclass
class Exposition:
    families: dict[str, Family]

    def __getitem__(self, name: str) -> Family:
        return self.families[name]

    def value(self, family: str, name: str | None = None, **labels: str) -> float | None:
        return self.families[family].value(name, **labels)


def _unescape(quoted: str) -> str:
    body = quoted[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), body)


def _float(text: str, where: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise FormatError(f"{where}: {text!r} is not a number")
    return float(text.replace("Inf", "inf").replace("NaN", "nan"))


def _family_of(sample: str, families: dict[str, Family], current: Family | None) -> Family:
    if current is None:
        raise FormatError(f"sample {sample} before any # TYPE line")
    if sample == current.name:
        if current.type == "histogram":
            raise FormatError(f"histogram sample {sample} without _bucket/_sum/_count")
        return current
    suffix = sample[len(current.name) :] if sample.startswith(current.name) else None
    if current.type == "histogram" and suffix in ("_bucket", "_sum", "_count"):
        return current
    raise FormatError(f"sample {sample} does not belong to family {current.name}")


def parse(text: str) -> Exposition:
    if not text.endswith("\n"):
        raise FormatError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    current: Family | None = None
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        where = f"line {number} {line!r}"
        if line.startswith("#"):
            if match := _HELP.fullmatch(line):
                name, help_text = match.groups()
                family = families.setdefault(name, Family(name))
                if family.help or family.samples:
                    raise FormatError(f"{where}: second HELP, or HELP after samples")
                family.help = help_text
            elif match := _TYPE.fullmatch(line):
                name, kind = match.groups()
                family = families.setdefault(name, Family(name))
                if family.type or family.samples:
                    raise FormatError(f"{where}: second TYPE, or TYPE after samples")
                family.type = kind
            else:
                raise FormatError(f"{where}: only HELP and TYPE comments are expected")
            current = families[name]
            continue
        match = _SAMPLE.fullmatch(line)
        if not match:
            raise FormatError(f"{where}: not a sample line (name{{labels}} value)")
        name, rendered, raw_value = match.groups()
        family = _family_of(name, families, current)
        if not family.help or not family.type:
            raise FormatError(f"{where}: sample before its family's HELP and TYPE")
        labels = {k: _unescape(v) for k, v in _LABEL.findall(rendered or "")}
        if len(labels) != len(_LABEL.findall(rendered or "")):
            raise FormatError(f"{where}: a label appears twice")
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise FormatError(f"{where}: duplicate series")
        seen.add(key)
        value = _float(raw_value, where)
        if family.type == "counter" and not value >= 0:
            raise FormatError(f"{where}: a counter must be a non-negative number")
        family.samples.append((name, labels, value))
    for family in families.values():
        if not family.help or not family.type:
            raise FormatError(f"family {family.name} lacks HELP or TYPE")
        if family.type == "histogram":
            _check_histogram(family)
    return Exposition(families)


def _check_histogram(family: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    sums: set[tuple[tuple[str, str], ...]] = set()
    for name, labels, value in family.samples:
        if name.endswith("_bucket"):
            if "le" not in labels:
                raise FormatError(f"{family.name}: a bucket without le")
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(rest, []).append((_float(labels["le"], "le"), value))
        elif name.endswith("_count"):
            counts[tuple(sorted(labels.items()))] = value
        else:
            sums.add(tuple(sorted(labels.items())))
    if set(series) != set(counts) or set(series) != sums:
        raise FormatError(f"{family.name}: buckets, _sum and _count do not cover the same series")
    for rest, buckets in series.items():
        bounds = [le for le, _ in buckets]
        if bounds != sorted(bounds) or not math.isinf(bounds[-1]):
            raise FormatError(f"{family.name}{dict(rest)}: buckets unsorted or without +Inf")
        values = [v for _, v in buckets]
        if values != sorted(values):
            raise FormatError(f"{family.name}{dict(rest)}: buckets are not cumulative")
        if values[-1] != counts[rest]:
            raise FormatError(f"{family.name}{dict(rest)}: +Inf bucket differs from _count")
