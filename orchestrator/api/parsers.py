"""A JSON parser that turns every kind of hostile body into a 4xx, never a 500.

Python's ``json`` raises RecursionError on very deep nesting, accepts NaN and
Infinity (which PostgreSQL's jsonb refuses), and happily decodes NUL characters
and lone surrogates that PostgreSQL text cannot store. Each of those would
surface as a 500 deep in the ORM, so they are refused here, at the edge, naming
the field. A key given twice in one object is refused too: ``json`` would keep the
last one silently, while a proxy or a signature check may have read the first.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from orchestrator.api.errors import ApiError

#: Deeper than any sane request; well below the interpreter's recursion limit, so the
#: serializers, the error flattener and the hashing that walk the data stay safe.
MAX_DEPTH = 32

# NUL cannot be stored in PostgreSQL text or jsonb; lone surrogates cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def body_too_large() -> ApiError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return ApiError(
        code="body_too_large",
        message=f"The request body exceeds the limit of {limit} bytes.",
        status_code=413,
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unstorable(field: str) -> ApiError:
    message = "Must not contain NUL characters or lone surrogates (PostgreSQL cannot store them)."
    return ApiError(
        code="malformed_json",
        message=f"{field}: {message}",
        fields={field: [message]},
    )


def check_structure(data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings PostgreSQL cannot store; an
    unstorable string is named by its path (``data.note``, ``events.0.name``).

    Iterative, so it cannot itself run out of stack.
    """
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise _unstorable(path or "non_field_errors")
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ParseError(f"JSON is nested more than {MAX_DEPTH} levels deep.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                child = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    raise _unstorable(_UNSTORABLE.sub("?", child))
                stack.append((item, depth + 1, child))


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return data


class SafeJSONParser(JSONParser):
    """JSON only, bounded in size and depth; any failure is a ParseError (400) or a 413."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        # Read one byte past the limit: a body without a Content-Length (chunked) is bounded too.
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise body_too_large()
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError("The body is not valid UTF-8.") from None
        try:
            data = json.loads(
                text,
                parse_constant=_refuse_constant,
                parse_float=_finite_float,
                object_pairs_hook=_unique_keys,
            )
        except _DuplicateKey as exc:
            key = _UNSTORABLE.sub("?", exc.key)[:100]
            raise ApiError(
                code="duplicate_key",
                message=f"The key {key!r} appears more than once in one JSON object.",
                fields={key: ["Given more than once in the same object."]},
            ) from None
        except RecursionError:
            raise ParseError(f"JSON is nested more than {MAX_DEPTH} levels deep.") from None
        except ValueError as exc:
            # JSONDecodeError, a refused constant, an out-of-range number or an over-long integer.
            raise ParseError(f"Malformed JSON: {exc}") from None
        check_structure(data)
        return data
