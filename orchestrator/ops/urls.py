"""Operational routes: the health probe, the metrics and the landing page."""

from django.urls import path

from orchestrator.ops import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("", views.index, name="index"),
]
