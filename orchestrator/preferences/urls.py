"""Routes under /preferences/<token>/: the page, the data download and erasure."""

from django.urls import path

from orchestrator.preferences import views

urlpatterns = [
    path("", views.preference_center, name="preference-center"),
    path("data/", views.export, name="preference-center-export"),
    path("erase/", views.erase, name="preference-center-erase"),
]
