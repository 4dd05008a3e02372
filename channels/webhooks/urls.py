from django.urls import path

from channels.webhooks import views

app_name = "webhooks"

urlpatterns = [
    path("twilio/status/", views.twilio_status, name="twilio-status"),
    path("twilio/inbound/", views.twilio_inbound, name="twilio-inbound"),
    path("sendgrid/events/", views.sendgrid_events, name="sendgrid-events"),
    path("line/", views.line_events, name="line"),
]
