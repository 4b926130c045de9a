"""WSGI entry point: ``gunicorn -w 4 --threads 8 --preload djangoproject.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")
application = get_wsgi_application()
