"""Operational routes: the health probe and the landing page."""

from django.urls import path

from orchestrator.core import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("", views.index, name="index"),
]
