"""Settings of the example project: one app (``llmapp``), no database.

The LLM settings come from the environment, so one image runs anywhere:

====================  ==================================================  =============================
``LLM_BASE_URL``      the API up to its version prefix                    ``http://127.0.0.1:8000/v1``
``LLM_API_KEY``       the key (never logged)                              unset: no auth header
``LLM_MODEL``         model of every request                              ``gpt-4o-mini``
``LLM_RPM``           requests per ``LLM_INTERVAL`` of the account        500
``LLM_TPM``           tokens per ``LLM_INTERVAL``                         200000
``LLM_INTERVAL``      seconds the limits are stated over                  60
``LLM_BURST``         most requests at once (unset: apiexec's default)
``LLM_STORAGE``       where the buckets live: ``memory://`` (per process), ``memory://``
                      ``sqlite:///path.db`` (the workers of one host),
                      ``redis://host:6379/0`` (many hosts)
``LLM_KEY``           the quota's name inside the storage                 ``llm``
``LLM_CONCURRENCY``   calls in flight per process                         16
``LLM_DEADLINE``      seconds a call may take, waiting included           30
====================  ==================================================  =============================
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# An example: a real deployment reads its secret key from the environment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["llmapp.apps.LLMAppConfig"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "djangoproject.urls"
WSGI_APPLICATION = "djangoproject.wsgi.application"
DATABASES: dict = {}
USE_TZ = True

APIEXEC = {
    "base_url": os.environ.get("LLM_BASE_URL", "http://127.0.0.1:8000/v1"),
    "api_key_env": "LLM_API_KEY" if os.environ.get("LLM_API_KEY") else None,
    "model": os.environ.get("LLM_MODEL", "gpt-4o-mini"),
    "limit_requests": float(os.environ.get("LLM_RPM", "500")),
    "limit_tokens": float(os.environ.get("LLM_TPM", "200000")),
    "interval": float(os.environ.get("LLM_INTERVAL", "60")),
    "burst": float(os.environ["LLM_BURST"]) if os.environ.get("LLM_BURST") else None,
    "storage": os.environ.get("LLM_STORAGE", "memory://"),
    "key": os.environ.get("LLM_KEY", "llm"),
    "concurrency_limit": int(os.environ.get("LLM_CONCURRENCY", "16")),
    "deadline": float(os.environ.get("LLM_DEADLINE", "30")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"apiexec": {"handlers": ["console"], "level": "WARNING"}},
}
