"""Serve a model folder over HTTP (FastAPI + uvicorn), with micro-batching of concurrent requests."""

from transferkit.serve.app import create_app

__all__ = ["create_app"]
