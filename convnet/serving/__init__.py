"""Serving a run over HTTP: the FastAPI app factory, its engines and its web page."""

from convnet.serving.app import create_app

__all__ = ["create_app"]
