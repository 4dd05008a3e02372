"""A serializer's ``run_validation`` for the items of a bulk request, without its machinery.

A bulk endpoint checks up to a thousand items with the same serializer as the single
endpoint; DRF's per-field run (empty-value handling, error collection, ordered copies)
cost more than the rules themselves. ``plain_validated`` applies the same rules - each
field's own validators, choices and limits as the serializer declares them, its
``validate_<field>`` methods and its ``validate`` - through plain checks, and vouches
only for items that pass them all. Anything else (a missing required field, a wrong
type, a value a rule refuses, a field kind it does not know) answers ``None``, and the
caller runs the serializer, whose error messages are the ones the client gets. So the
rules and their wording stay in the serializer: nothing here decides on its own.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.fields import empty

from orchestrator.api.serializers import (
    JsonObjectField,
    RecipientField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
)

#: What DRF's CharField refuses whatever its validators say: surrogates, NUL (its
#: ProhibitSurrogateCharactersValidator and ProhibitNullCharactersValidator).
_UNSAFE = re.compile("[\x00\ud800-\udfff]")

_REFUSED = (serializers.ValidationError, DjangoValidationError)


class _Unvouched(Exception):
    """The plain checks cannot vouch for a value: the serializer must judge it."""


def _validators(field: serializers.Field, value: Any) -> Any:
    for validator in field.validators:
        validator(value)
    return value


def _char(field: StrictCharField, value: Any) -> str:
    if not isinstance(value, str) or not value or _UNSAFE.search(value):
        raise _Unvouched
    if field.trim_whitespace and value.strip() != value:
        raise _Unvouched  # trimmed (or blank): the serializer's own path decides
    return _validators(field, value)


def _choice(field: StrictChoiceField, value: Any) -> str:
    if not isinstance(value, str) or value not in field.choice_strings_to_values:
        raise _Unvouched
    return _validators(field, field.choice_strings_to_values[value])


def _integer(field: StrictIntegerField, value: Any) -> int:
    if type(value) is not int:
        raise _Unvouched
    return _validators(field, value)


def _json_object(field: JsonObjectField, value: Any) -> dict[str, Any]:
    # Values parsed from a JSON request are JSON whatever they are (the child's check).
    if not isinstance(value, dict) or (not value and not field.allow_empty):
        raise _Unvouched
    return _validators(field, {str(k): v for k, v in value.items()})


def _recipient(field: RecipientField, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Unvouched
    checked = plain_validated(field._checker, value)
    if checked is None:
        raise _Unvouched
    return _validators(field, checked)


#: Field kinds checked plainly, by exact class; any other runs its own ``run_validation``.
_PLAIN = {StrictCharField: _char, StrictIntegerField: _integer, JsonObjectField: _json_object}


def _check(field: serializers.Field, value: Any) -> Any:
    if value is None:
        if not field.allow_null:
            raise _Unvouched
        return None
    kind = type(field)
    if kind in _PLAIN:
        return _PLAIN[kind](field, value)
    if isinstance(field, StrictChoiceField) and not field.allow_blank:
        return _choice(field, value)
    if kind is RecipientField:
        return _recipient(field, value)
    return field.run_validation(value)


def plain_validated(serializer: serializers.Serializer, data: Any) -> dict[str, Any] | None:
    """``serializer.run_validation(data)`` when the plain checks vouch for ``data``, else
    None (run the serializer: it refuses the item, or converts it in a way not done here).
    ``serializer`` is reused across items, as a bulk endpoint's checker is.
    """
    if not isinstance(data, dict) or serializer.get_validators():
        return None
    validated: dict[str, Any] = {}
    try:
        for name, field in serializer.fields.items():
            if field.read_only or field.source != name:
                return None
            value = data.get(name, empty)
            if value is empty:
                if field.required:
                    return None
                if field.default is empty:
                    continue
                value = field.get_default()
            else:
                value = _check(field, value)
            method = getattr(serializer, f"validate_{name}", None)
            validated[name] = method(value) if method is not None else value
        return serializer.validate(validated)
    except (_Unvouched, *_REFUSED):
        return None


def validated(serializer: serializers.Serializer, data: Any) -> dict[str, Any]:
    """``serializer.run_validation(data)``: the plain checks when they vouch for ``data``,
    else the serializer itself (raising its ValidationError)."""
    checked = plain_validated(serializer, data)
    return checked if checked is not None else serializer.run_validation(data)


#: One serializer per class: building one deep-copies its declared fields.
_checkers: dict[type[serializers.Serializer], serializers.Serializer] = {}


def checker(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    """The serializer of ``serializer_class`` kept to check items with (``validated``),
    for serializers that keep no state of their own while validating (no context, no
    instance)."""
    found = _checkers.get(serializer_class)
    if found is None:
        found = _checkers.setdefault(serializer_class, serializer_class())
    return found
