"""Routes of /api/v1/. Paths carry no trailing slash, as in the public contract (API.md).

An unknown path under /api/ gets the JSON error body from ApiEdgeMiddleware.
"""

from django.urls import path

from orchestrator.api import analytics, broadcasts, journeys, privacy, segments, views

urlpatterns = [
    path("customers", views.CustomerUpsertView.as_view(), name="customers"),
    # Before the detail route: "bulk" is a path here, not an external_id.
    path("customers/bulk", views.CustomerBulkView.as_view(), name="customers-bulk"),
    path(
        "customers/<str:external_id>/export",
        privacy.CustomerExportView.as_view(),
        name="customer-export",
    ),
    path(
        "customers/<str:external_id>/erase",
        privacy.CustomerEraseView.as_view(),
        name="customer-erase",
    ),
    path(
        "customers/<str:external_id>/preferences",
        privacy.CustomerPreferencesView.as_view(),
        name="customer-preferences",
    ),
    path("customers/<str:external_id>", views.CustomerDetailView.as_view(), name="customer-detail"),
    path("events", views.EventView.as_view(), name="events"),
    path("events/bulk", views.EventBulkView.as_view(), name="events-bulk"),
    path("messages", views.MessageCreateView.as_view(), name="messages"),
    path("messages/batch", views.MessageBatchView.as_view(), name="messages-batch"),
    path("messages/<int:pk>", views.MessageDetailView.as_view(), name="message-detail"),
    path("topics", views.TopicListView.as_view(), name="topics"),
    path("topics/<slug:key>", views.TopicDetailView.as_view(), name="topic-detail"),
    path("templates", views.TemplateListView.as_view(), name="templates"),
    path("templates/<slug:key>", views.TemplateDetailView.as_view(), name="template-detail"),
    path("frequency-rules", views.FrequencyRuleListView.as_view(), name="frequency-rules"),
    path(
        "frequency-rules/<slug:key>",
        views.FrequencyRuleDetailView.as_view(),
        name="frequency-rule-detail",
    ),
    path("journeys", journeys.JourneyListView.as_view(), name="journeys"),
    path("journeys/<slug:key>", journeys.JourneyDetailView.as_view(), name="journey-detail"),
    path(
        "journeys/<slug:key>/activate",
        journeys.JourneyActivateView.as_view(),
        name="journey-activate",
    ),
    path("journeys/<slug:key>/pause", journeys.JourneyPauseView.as_view(), name="journey-pause"),
    path(
        "journeys/<slug:key>/simulate",
        journeys.JourneySimulateView.as_view(),
        name="journey-simulate",
    ),
    path(
        "journeys/<slug:key>/analytics",
        analytics.JourneyAnalyticsView.as_view(),
        name="journey-analytics",
    ),
    path("segments", segments.SegmentListView.as_view(), name="segments"),
    path("segments/<slug:key>", segments.SegmentDetailView.as_view(), name="segment-detail"),
    path("segments/<slug:key>/count", segments.SegmentCountView.as_view(), name="segment-count"),
    path(
        "segments/<slug:key>/members",
        segments.SegmentMembersView.as_view(),
        name="segment-members",
    ),
    path("broadcasts", broadcasts.BroadcastListView.as_view(), name="broadcasts"),
    path(
        "broadcasts/<slug:key>", broadcasts.BroadcastDetailView.as_view(), name="broadcast-detail"
    ),
    path(
        "broadcasts/<slug:key>/schedule",
        broadcasts.BroadcastScheduleView.as_view(),
        name="broadcast-schedule",
    ),
    path(
        "broadcasts/<slug:key>/cancel",
        broadcasts.BroadcastCancelView.as_view(),
        name="broadcast-cancel",
    ),
    path(
        "broadcasts/<slug:key>/test", broadcasts.BroadcastTestView.as_view(), name="broadcast-test"
    ),
    path(
        "broadcasts/<slug:key>/forecast",
        broadcasts.BroadcastForecastView.as_view(),
        name="broadcast-forecast",
    ),
    path("channels/health", analytics.ChannelHealthView.as_view(), name="channel-health"),
]
