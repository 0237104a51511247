"""`localllm serve`: bind, answer /health at once, load the model in the background, serve.

SIGTERM or Ctrl-C stops accepting connections, gives running requests
`shutdown_timeout` seconds to finish, cancels the rest and closes the engine.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

from ..errors import LocalLLMError
from ..memory import format_bytes
from .app import MAX_QUEUE, ServerConfig, create_app

SHUTDOWN_TIMEOUT_S = 10


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise LocalLLMError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(model_path: str | Path, model_name: str, host: str = "127.0.0.1", port: int = 8000,
          parallel: int = 8, api_key: str | None = None, n_ctx: int = 4096, threads: int | None = None,
          max_queue: int = MAX_QUEUE, shutdown_timeout: float = SHUTDOWN_TIMEOUT_S, log_level: str = "info",
          speculative: dict | None = None) -> None:
    """speculative: LLM's speculative keywords (e.g. {"speculative": "lookup", "draft_max": 8}); none: off."""
    import uvicorn

    from ..api import LLM

    def load():
        llm = LLM(str(model_path), n_ctx=n_ctx, threads=threads, max_num_seqs=parallel, **(speculative or {}))
        llm.warmup()  # allocates the KV pool and compiles (or loads) the kernels on the engine thread
        print(f"localllm: {model_name} ready: {parallel} sequences at once, n_ctx {n_ctx}, KV pool "
              f"{format_bytes(llm.engine.kv_pool_bytes)}", file=sys.stderr, flush=True)
        return llm

    app = create_app(ServerConfig(model_name, api_key, max_queue), load)
    sock = _listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=shutdown_timeout,
                                           access_log=False))
    failure: list[str] = []

    def on_load_error(message: str) -> None:
        failure.append(message)
        server.should_exit = True

    app.state.on_load_error = on_load_error
    if api_key is None and bound_host not in ("127.0.0.1", "::1", "localhost"):
        print(f"localllm: warning: listening on {bound_host} without --api-key; anyone who can reach this "
              "port can use the model", file=sys.stderr)
    print(f"localllm: serving {model_name} on http://{host}:{bound_port}/v1 (loading the model; /health says "
          "when it is ready)", file=sys.stderr, flush=True)
    # uvicorn re-raises the signal it stopped on once it has shut down; after a graceful stop on
    # SIGTERM that is no failure, so a no-op handler takes it and the command exits 0
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failure:
        raise LocalLLMError(f"the model failed to load: {failure[0]}")
