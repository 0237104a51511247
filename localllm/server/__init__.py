"""The OpenAI-compatible HTTP server on the continuous-batching engine."""

from .app import ServerConfig, create_app
from .run import serve

__all__ = ["ServerConfig", "create_app", "serve"]
