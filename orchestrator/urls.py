"""URL routes: admin, the REST API and its docs, the dev inbox, operations."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from orchestrator.consent.message_links import short_preference_redirect
from orchestrator.consent.unsubscribe import one_click
from orchestrator.delivery import clicks

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("orchestrator.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("dev/inbox/", include("channels.devinbox.urls")),
    path("webhooks/", include("channels.webhooks.urls")),
    path("unsubscribe/<str:token>/", one_click, name="one-click-unsubscribe"),
    # The first path, still in inboxes: it stays as long as links already sent live.
    path("u/<str:token>/", one_click, name="one-click-unsubscribe-legacy"),
    path("p/<str:token>/", short_preference_redirect, name="preference-center-short"),
    path("r/<str:token>", clicks.click, name="click"),  # no slash: every SMS character counts
    path("preferences/<str:token>/", include("orchestrator.preferences.urls")),
    path("", include("orchestrator.ops.urls")),
]
