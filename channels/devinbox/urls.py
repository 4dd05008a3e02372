"""Routes of /dev/inbox/."""

from django.urls import path

from channels.devinbox import views

app_name = "devinbox"

urlpatterns = [
    path("", views.inbox_list, name="list"),
    path("<int:pk>/", views.inbox_detail, name="detail"),
    path("<int:pk>/raw.html", views.inbox_raw_html, name="raw-html"),
]
