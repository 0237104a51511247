"""The OpenAI-compatible HTTP app: routes, auth, limits; generation goes through the engine.

Every request becomes one engine request with its own sampling params, so
clients batch together continuously and each one's tokens are the same as
if it ran alone. A request whose client goes away is cancelled, which frees
its KV blocks.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..engine.engine import Event
from ..errors import LocalLLMError
from ..kv_cache import BLOCK_SIZE
from ..sampling import SamplingParams
from .bridge import Admission, GenerationStream
from .errors import APIError, bad_request, error_body, install_handlers
from .formats import ResponseFormat
from .metrics import ServerMetrics
from .schemas import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest, SamplingFields

MAX_BODY_BYTES = 4 << 20  # a request body past this gets 413
MAX_QUEUE = 64  # requests the server holds at once (running + waiting) before answering 429
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat runs to the context's end


@dataclass
class ServerConfig:
    model_name: str  # what /v1/models lists and requests may name
    api_key: str | None = None
    max_queue: int = MAX_QUEUE
    max_body_bytes: int = MAX_BODY_BYTES


class ServerState:
    """The model once loaded (loading happens in the background), and what the routes share."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.llm = None
        self.status, self.error = "loading", None
        self.admission = Admission(config.max_queue)
        self.metrics = ServerMetrics(lambda: self.llm.engine_load if self.llm is not None else None)

    def ready_llm(self):
        if self.llm is None:
            why = f"the model failed to load: {self.error}" if self.error else "the model is still loading"
            raise APIError(503, why, type="server_error", code="model_not_ready")
        return self.llm

    def health(self) -> tuple[str, str | None]:
        """("ok" | "loading" | "error", why): an engine that died makes the server unhealthy."""
        if self.status == "ready" and not self.llm.engine.alive:
            return "error", f"the engine stopped: {self.llm.engine.failure or 'closed'}"
        return ("ok" if self.status == "ready" else self.status), self.error


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413 before the app reads it.

    A declared Content-Length is checked up front (the HTTP parser holds the client to it);
    a chunked body is read here, up to the limit, and handed on whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client left
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await self._refuse(send)
            if not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        body = json.dumps(error_body(f"the request body is larger than {self.limit} bytes",
                                     code="body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _Disconnected(Exception):
    pass


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, awaitable):
    """Await `awaitable`, or raise _Disconnected as soon as the client goes away."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise _Disconnected
    finally:
        for task in (work, watch):
            task.cancel()


class _ClosingStream(StreamingResponse):
    """A streaming response that runs `on_close` however it ends: finished, disconnected, cancelled."""

    def __init__(self, content, on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


SHUTDOWN_MESSAGE = "the server shut down before the request finished"


def _cut_by_shutdown(event: Event) -> bool:
    """The engine closed under the request (shutdown past its grace period): not an OpenAI finish."""
    return event.stats is not None and event.step.finish_reason == "cancelled"


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(config: ServerConfig, load: Callable[[], object]) -> FastAPI:
    """The app; `load()` builds the LLM (on a worker thread, so /health answers meanwhile)."""
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app):
        async def load_in_background():
            try:
                state.llm = await asyncio.to_thread(load)
                state.status = "ready"
            except Exception as e:  # reported by /health; the routes answer 503
                state.status, state.error = "error", str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                if app.state.on_load_error is not None:
                    app.state.on_load_error(state.error)

        loader = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            loader.cancel()
            if state.llm is not None:
                await asyncio.to_thread(state.llm.close)

    app = FastAPI(title="localllm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.localllm = state
    app.state.on_load_error = None
    install_handlers(app, on_error=lambda status: state.metrics.rejected.labels(str(status)).inc())
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    def require_key(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), config.api_key.encode())
        if not ok:
            raise APIError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")

    auth = [Depends(require_key)]

    # ---- status ------------------------------------------------------------

    @app.get("/health")
    async def health():
        status, why = state.health()
        body = {"status": status} if why is None else {"status": status, "message": why}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=auth)
    async def models():
        entry = {"id": config.model_name, "object": "model", "created": 0, "owned_by": "localllm"}
        if state.llm is not None:
            entry["context_length"] = state.llm.n_ctx
        return {"object": "list", "data": [entry]}

    # ---- tokens ------------------------------------------------------------

    @app.post("/tokenize", dependencies=auth)
    async def tokenize(body: TokenizeRequest):
        llm = state.ready_llm()
        add_bos = body.add_special and llm.tokenizer.add_bos
        # tokenizing a large body is CPU work: off the event loop, so streams keep flowing
        return {"tokens": await asyncio.to_thread(llm.tokenize, body.content, add_bos, body.parse_special)}

    @app.post("/detokenize", dependencies=auth)
    async def detokenize(body: DetokenizeRequest):
        llm = state.ready_llm()
        try:
            return {"content": llm.detokenize(body.tokens)}
        except LocalLLMError as e:
            raise bad_request(str(e), param="tokens") from None

    # ---- generation --------------------------------------------------------

    def sampling(body: SamplingFields, llm, prompt_len: int, default_max: int, extra_stops: tuple[str, ...],
                 prompt_field: str):
        if body.model is not None and body.model != config.model_name:
            raise APIError(404, f"model {body.model[:80]!r} is not served here; this server has "
                                f"{config.model_name!r}", type="not_found_error", code="model_not_found",
                           param="model")
        if body.n not in (None, 1):
            raise bad_request("only n=1 is supported", param="n")
        limit = min(llm.n_ctx, llm.engine.load.kv_blocks_total * BLOCK_SIZE)
        if prompt_len > limit:
            raise bad_request(f"the prompt has {prompt_len} tokens, more than the context window of {limit}",
                              code="context_length_exceeded", param=prompt_field)
        max_tokens = body.max_tokens
        if isinstance(body, ChatCompletionRequest) and body.max_completion_tokens is not None:
            max_tokens = body.max_completion_tokens
        if max_tokens is not None and max_tokens < 1:
            raise bad_request(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        vocab = llm.model.cfg.vocab_size
        for key in body.logit_bias or {}:
            if not (key.isascii() and key.isdigit()) or int(key) >= vocab:
                raise bad_request(f"logit_bias key {key[:40]!r} is not a token id below {vocab}", param="logit_bias")
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        if any(not s for s in stop):
            raise bad_request("stop strings must be non-empty", param="stop")
        given = {k: getattr(body, k) for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                                                 "presence_penalty", "frequency_penalty", "seed", "logit_bias")
                 if getattr(body, k) is not None}
        try:
            return SamplingParams(max_tokens=max_tokens or default_max, stop=stop + extra_stops, **given)
        except LocalLLMError as e:
            raise bad_request(str(e)) from None

    async def generate(request: Request, body: SamplingFields, chat: bool, prompt_ids: list[int],
                       params: SamplingParams, n_top: int | None, llm):
        endpoint = "chat" if chat else "completions"
        fmt = ResponseFormat(chat, config.model_name, llm.tokenizer, n_top or 0)
        state.admission.acquire()
        try:
            gen = GenerationStream(llm.engine, prompt_ids, params, n_top, bool(body.ignore_eos))
        except APIError:
            state.admission.release()
            raise
        handed_off = False
        try:
            first = await _unless_disconnected(request, gen.next())
            if first.error is not None:
                state.metrics.finished(endpoint, "error", None)
                raise APIError(500, first.error, type="server_error")
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                events = _stream_events(gen, first, fmt, include_usage, endpoint)

                def closed() -> None:  # however the stream ended
                    if not gen.finished:  # the client left first
                        state.metrics.finished(endpoint, "cancelled", None)
                    gen.close()
                    state.admission.release()

                response = _ClosingStream(events, closed)
                handed_off = True  # from here the response's close releases the request
                return response
            return await _unless_disconnected(request, _whole_response(gen, first, fmt, n_top is not None, endpoint))
        except _Disconnected:
            state.metrics.finished(endpoint, "cancelled", None)
            return Response(status_code=499)
        finally:
            if not handed_off:
                gen.close()
                state.admission.release()

    async def _whole_response(gen: GenerationStream, event: Event, fmt: ResponseFormat, want_lp: bool,
                              endpoint: str):
        texts, entries = [], []
        while True:
            if event.error is not None or _cut_by_shutdown(event):
                state.metrics.finished(endpoint, "error", None)
                raise APIError(500 if event.error else 503, event.error or SHUTDOWN_MESSAGE, type="server_error")
            texts.append(event.step.text)
            if event.logprob is not None:
                entries.append(event.logprob)
            if event.stats is not None:
                state.metrics.finished(endpoint, event.step.finish_reason, event.stats)
                return fmt.whole("".join(texts), entries if want_lp else None, event.step.finish_reason, event.stats)
            event = await gen.next()

    async def _stream_events(gen: GenerationStream, event: Event, fmt: ResponseFormat, include_usage: bool,
                             endpoint: str) -> AsyncIterator[str]:
        if fmt.chat:
            yield _sse(fmt.chunk("", role=True))
        while True:
            if event.error is not None or _cut_by_shutdown(event):
                state.metrics.finished(endpoint, "error", None)
                yield _sse(error_body(event.error or SHUTDOWN_MESSAGE, "server_error"))
                break
            lp = [event.logprob] if event.logprob is not None else None
            if event.step.text or lp:
                yield _sse(fmt.chunk(event.step.text, lp))
            if event.stats is not None:
                state.metrics.finished(endpoint, event.step.finish_reason, event.stats)
                yield _sse(fmt.chunk(None, finish_reason=event.step.finish_reason))
                if include_usage:
                    yield _sse(fmt.usage_chunk(event.stats))
                break
            event = await gen.next()
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request, body: CompletionRequest):
        llm = state.ready_llm()
        if body.echo or body.suffix is not None or (body.best_of or 1) != 1:
            raise bad_request("echo, suffix and best_of are not supported")
        prompt = body.prompt[0] if isinstance(body.prompt, list) and isinstance(body.prompt[0], str) else body.prompt
        try:
            ids = await asyncio.to_thread(llm.prompt_ids, prompt)
        except LocalLLMError as e:  # a token id outside the vocabulary
            raise bad_request(str(e), param="prompt") from None
        if not ids:
            raise bad_request("the prompt is empty", param="prompt")
        params = sampling(body, llm, len(ids), COMPLETION_MAX_TOKENS, (), "prompt")
        return await generate(request, body, False, ids, params, body.logprobs, llm)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request, body: ChatCompletionRequest):
        llm = state.ready_llm()
        if body.tools:
            raise bad_request("tools are not supported", param="tools")
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise bad_request("only response_format {'type': 'text'} is supported", param="response_format")
        # OpenAI's newer "developer" role is what chat templates call "system"
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        try:
            ids = await asyncio.to_thread(llm.chat_ids, messages)  # the template and the tokenizer: CPU
        except LocalLLMError as e:  # the template refused these messages
            raise bad_request(str(e), param="messages") from None
        n_top = (body.top_logprobs or 0) if body.logprobs else None
        if body.top_logprobs and not body.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
        params = sampling(body, llm, len(ids), llm.n_ctx, llm.chat_stops, "messages")
        return await generate(request, body, True, ids, params, n_top, llm)

    return app
