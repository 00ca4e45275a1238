"""ASGI entry point for production: the Flask app behind uvicorn's event loop.

gunicorn's threaded worker gives each connection a thread while it reads the request headers, so
a few slow clients (slowloris) can hold every thread and stop the service. uvicorn reads headers
on its event loop, where a slow connection costs a coroutine, and only a complete request takes
one of the WSGI threads. The Procfile runs ``gunicorn -c gunicorn.conf.py asgi:app``.
"""
import os

from a2wsgi import WSGIMiddleware

from wsgi import app as flask_app


def _input_terminated(environ, start_response):
    # uvicorn ends the body stream itself (chunked bodies too), so Werkzeug may read it to the
    # end and enforce MAX_CONTENT_LENGTH on bodies that carry no Content-Length.
    environ["wsgi.input_terminated"] = True
    return flask_app(environ, start_response)


app = WSGIMiddleware(_input_terminated, workers=int(os.environ.get("GUNICORN_THREADS", "8")))
