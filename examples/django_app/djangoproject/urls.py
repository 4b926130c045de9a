"""URLs of the example project: everything is the llmapp's."""

from django.urls import include, path

urlpatterns = [path("", include("llmapp.urls"))]
