"""/api/v1/segments: saved segments as code, their size and a page of members.

Reading takes the ``read`` scope, writing ``admin``. What conditions *mean* is judged by
``orchestrator.segments`` (every problem comes back as a 400 field named by its path,
e.g. ``conditions.all.1``); the serializers here only check JSON types.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator.api.errors import ApiError
from orchestrator.api.serializers import JsonObjectField, StrictCharField, StrictSlugField
from orchestrator.api.views import (
    ApiView,
    _body_with_key,
    _errors,
    _key_parameter,
    _put_body,
    _valid,
)
from orchestrator.segments.models import Segment
from orchestrator.segments.selectors import segment_count, segment_sample
from orchestrator.segments.services import (
    SegmentExists,
    SegmentInUse,
    SegmentInvalid,
    segment_delete,
    segment_save,
)
from orchestrator.segments.tree import describe

SCOPES = {"GET": ["read"], "*": ["admin"]}
MAX_MEMBERS = 1000


class SegmentSerializer(serializers.Serializer):
    key = StrictSlugField(max_length=100)
    name = StrictCharField(max_length=200)
    description = StrictCharField(required=False, allow_blank=True, default="")
    conditions = JsonObjectField(
        help_text='A tree: {"all": [...]}, {"any": [...]}, {"not": {...}}, {"segment": "key"} '
        'and conditions with a "type" (attribute, event, consent, message, replenishment).'
    )
    summary = serializers.CharField(read_only=True, help_text="The conditions in words.")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class SegmentListSerializer(serializers.Serializer):
    results = SegmentSerializer(many=True)


class SegmentCountSerializer(serializers.Serializer):
    key = serializers.CharField()
    size = serializers.IntegerField()
    reachable = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Per channel: an address, not suppressed, not opted out of marketing there.",
    )


class SegmentMemberSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    email = serializers.CharField(allow_blank=True)


class SegmentMembersSerializer(serializers.Serializer):
    key = serializers.CharField()
    results = SegmentMemberSerializer(many=True)


class MembersQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, default=100, min_value=1, max_value=MAX_MEMBERS
    )


def _shown(segment: Segment) -> dict[str, Any]:
    return {
        "key": segment.key,
        "name": segment.name,
        "description": segment.description,
        "conditions": segment.conditions,
        "summary": describe(segment.conditions),
        "created_at": segment.created_at,
        "updated_at": segment.updated_at,
    }


def _segment(key: str) -> Segment:
    segment = Segment.objects.filter(key=key).first()
    if segment is None:
        raise NotFound(f"No segment {key!r}.")
    return segment


def _save(data: dict[str, Any], *, create_only: bool) -> tuple[Segment, bool]:
    try:
        return segment_save(
            key=data["key"],
            name=data["name"],
            description=data.get("description") or "",
            conditions=data["conditions"],
            create_only=create_only,
        )
    except SegmentInvalid as exc:
        raise ApiError(
            code="invalid", message="The segment has problems.", fields=exc.as_fields()
        ) from None
    except SegmentExists as exc:
        raise ApiError(code="already_exists", message=str(exc), status_code=409) from None


_KEY = _key_parameter("key", "The segment key.")


class SegmentListView(ApiView):
    required_scopes = SCOPES

    @extend_schema(
        operation_id="segments_list",
        tags=["segments"],
        responses={200: SegmentListSerializer, **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response({"results": [_shown(s) for s in Segment.objects.order_by("key")]})

    @extend_schema(
        operation_id="segments_create",
        tags=["segments"],
        request=SegmentSerializer,
        responses={201: SegmentSerializer, **_errors(400, 401, 403, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        segment, _created = _save(_valid(SegmentSerializer, request.data), create_only=True)
        return Response(_shown(segment), status=status.HTTP_201_CREATED)


class SegmentDetailView(ApiView):
    required_scopes = SCOPES

    @extend_schema(
        operation_id="segments_retrieve",
        tags=["segments"],
        parameters=[_KEY],
        responses={200: SegmentSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(_shown(_segment(key)))

    @extend_schema(
        operation_id="segments_put",
        tags=["segments"],
        summary="Replace a segment (created if new)",
        parameters=[_KEY],
        request=_put_body(SegmentSerializer),
        responses={200: SegmentSerializer, 201: SegmentSerializer, **_errors(400, 401, 403, 413)},
    )
    def put(self, request: Request, key: str) -> Response:
        data = _valid(SegmentSerializer, _body_with_key(request.data, key))
        segment, created = _save(data, create_only=False)
        return Response(
            _shown(segment), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        operation_id="segments_delete",
        tags=["segments"],
        summary="Delete a segment no other segment includes",
        parameters=[_KEY],
        responses={204: None, **_errors(401, 403, 404, 409)},
    )
    def delete(self, request: Request, key: str) -> Response:
        try:
            segment_delete(segment=_segment(key))
        except SegmentInUse as exc:
            raise ApiError(code="in_use", message=str(exc), status_code=409) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class SegmentCountView(ApiView):
    required_scopes = SCOPES

    @extend_schema(
        operation_id="segments_count",
        tags=["segments"],
        summary="How many customers the segment has now, and how many are reachable per channel",
        parameters=[_KEY],
        responses={200: SegmentCountSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        count = segment_count(_segment(key))
        return Response({"key": key, **count.as_dict()})


class SegmentMembersView(ApiView):
    required_scopes = SCOPES

    @extend_schema(
        operation_id="segments_members",
        tags=["segments"],
        summary="The first members of the segment (by customer id)",
        parameters=[
            _KEY,
            OpenApiParameter(
                "limit", int, OpenApiParameter.QUERY, description=f"1 to {MAX_MEMBERS} (100)."
            ),
        ],
        responses={200: SegmentMembersSerializer, **_errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        segment = _segment(key)
        limit = _valid(MembersQuerySerializer, request.query_params)["limit"]
        members = segment_sample(segment, limit)
        return Response(
            {
                "key": key,
                "results": [
                    {"external_id": m["external_id"], "email": m["email"]} for m in members
                ],
            }
        )
