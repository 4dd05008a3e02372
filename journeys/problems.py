"""What is wrong with a journey definition, in words a marketer understands.

``Problem`` says where (``field``, e.g. ``trigger.event`` or ``steps.remind``) and what;
``DefinitionInvalid`` carries all of them at once. The small checks here are shared by
the definition's own validation and each trigger kind's (``journeys.triggers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.segments import conditions


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class DefinitionInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems

    def as_fields(self) -> dict[str, list[str]]:
        fields: dict[str, list[str]] = {}
        for p in self.problems:
            fields.setdefault(p.field or "definition", []).append(p.message)
        return fields


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def is_name(value: Any) -> bool:
    """A usable name: non-empty text of a sensible length."""
    return isinstance(value, str) and bool(value.strip()) and len(value) <= 200


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def conditions_problems(
    value: Any, field: str, *, allowed: Sequence[str], required: bool
) -> list[Problem]:
    if value in (None, []) and not required:
        return []
    if not isinstance(value, list) or not value:
        return [Problem(field, "Add at least one condition.")]
    out = []
    for i, condition in enumerate(value):
        out += [
            Problem(f"{field}[{i}]", m)
            for m in conditions.condition_problems(condition, allowed=tuple(allowed))
        ]
    return out
