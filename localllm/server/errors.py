"""OpenAI's error shape, {"error": {"message", "type", "param", "code"}}, for every failure."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_MESSAGE = 500  # characters of an error message; a hostile body must not be echoed whole


class APIError(Exception):
    """An error a client gets as JSON with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message[:MAX_MESSAGE], "type": type, "param": param, "code": code}}


def bad_request(message: str, code: str | None = None, param: str | None = None) -> APIError:
    return APIError(400, message, code=code, param=param)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problem pydantic found, as 'where: what', and the field it names."""
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    return f"{where}: {first.get('msg', 'invalid value')}", (loc[0] if loc else None)


def install_handlers(app: FastAPI, on_error: Callable[[int], None]) -> None:
    """Every error answers in OpenAI's shape; on_error(status) counts it."""

    def answer(status: int, body: dict) -> JSONResponse:
        on_error(status)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return answer(exc.status, error_body(exc.message, exc.type, exc.code, exc.param))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return answer(400, error_body(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return answer(exc.status_code, error_body(str(exc.detail), kind))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return answer(500, error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"))
