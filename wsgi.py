"""WSGI entry point: ``flask --app wsgi run``; production wraps it in ``asgi.py`` (see the Procfile)."""
from app import create_app

app = create_app()
