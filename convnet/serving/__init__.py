"""Serving a run over HTTP: the FastAPI app factory, its engines and its web page.

`create_app` is imported when first asked for, so that `convnet.serving.listen` checks a `serve`
command, and refuses it, without FastAPI.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from convnet.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'convnet.serving' has no attribute {name!r}")
