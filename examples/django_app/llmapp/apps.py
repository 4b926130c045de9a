"""The app's configuration: the executor is created when Django is ready."""

from django.apps import AppConfig
from django.conf import settings


class LLMAppConfig(AppConfig):
    name = "llmapp"
    verbose_name = "LLM calls through apiexec"

    def ready(self) -> None:
        # Once per process, before the first request. No thread starts here
        # (apiexec's workers start with the first call), so this is safe in
        # gunicorn's master with --preload and in management commands.
        from llmapp import llm

        llm.start(settings.APIEXEC)
