"""Guards for /api/ requests: an oversize body is refused before it is read, and an
unknown path (or any error Django answers itself, such as a disallowed Host header)
answers with the JSON error body instead of Django's HTML page."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from orchestrator.api.errors import json_error

API_PREFIX = "/api/"
_DJANGO_ERRORS = {
    400: ("bad_request", "The request is malformed (for example its Host header)."),
    403: ("forbidden", "The request is forbidden."),
    405: ("method_not_allowed", "This method is not allowed here."),
}


class ApiEdgeMiddleware:
    """Sits near the top of MIDDLEWARE so it sees requests first and responses last.

    Django raises RequestDataTooBig only when ``request.body`` is read, and DRF reads
    the stream directly, so neither stops a large upload; checking the declared length
    here refuses it before a byte is read (the parser bounds chunked bodies too).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(400, "bad_content_length", "Content-Length is not a number.")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length > limit:
            return json_error(
                413, "body_too_large", f"The request body exceeds the limit of {limit} bytes."
            )
        response = self.get_response(request)
        if not 400 <= response.status_code < 500 or response.get("Content-Type", "").startswith(
            "application/json"
        ):
            return response
        if response.status_code == 404:
            # No route matched (DRF's own 404s are JSON already).
            return json_error(404, "not_found", f"No endpoint at {request.path[:200]}.")
        # Django's own answers, e.g. 400 for a Host header not in ALLOWED_HOSTS.
        code, message = _DJANGO_ERRORS.get(
            response.status_code, ("error", f"The request was refused ({response.status_code}).")
        )
        refused = json_error(response.status_code, code, message)
        for header in ("Allow", "Retry-After"):
            if header in response:
                refused[header] = response[header]
        return refused
