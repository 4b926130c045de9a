"""The app's URLs."""

from django.urls import path

from llmapp import views

urlpatterns = [
    path("chat", views.chat, name="chat"),
    path("chats", views.chats, name="chats"),
    path("healthz", views.healthz, name="healthz"),
]
