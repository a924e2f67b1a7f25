"""The HTTP connection layer: parser limits, a header read deadline, problem+json errors.

A request the parser refuses (an over-long or malformed line, too many headers) never
reaches the app or its middlewares: aiohttp answers it from ``RequestHandler.handle_error``.
``ProblemRequestHandler`` answers it as a problem document instead, without echoing the
refused bytes (they may hold a token), and closes a connection whose request headers do
not arrive within ``DOCKYARD_HEADER_READ_TIMEOUT`` (slowloris). ``ProblemAppRunner`` is
``web.AppRunner`` serving through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from dockyard.api import errors
from dockyard.api.middlewares import REQUEST_ID_HEADER
from dockyard.core.settings import Settings

logger = logging.getLogger(__name__)

# Longer than ingress-nginx keeps idle upstream connections (60 s), so that the proxy,
# not the API, closes them; far shorter than aiohttp's default of an hour.
KEEPALIVE_TIMEOUT = 75.0
MAX_REQUEST_LINE = 8190
MAX_HEADERS = 100


class ProblemRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, with problem+json errors and a header deadline.

    The deadline runs from the connection's start, and from the first bytes after a
    finished request, until a request's headers are parsed; an idle keep-alive connection
    is left to the keep-alive timeout.
    """

    def __init__(self, manager: web.Server, *, header_read_timeout: float, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._header_read_timeout = header_read_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        self._in_request = False

    # -- the header deadline ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if data and not self._in_request:
            self._arm_header_deadline()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def headers_parsed(self) -> None:
        """A request (or a parser error) is being handled: its headers are all in."""
        self._in_request = True
        self._disarm_header_deadline()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._in_request = False

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = asyncio.get_running_loop().call_later(
                self._header_read_timeout, self._header_deadline_passed
            )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if not self._in_request:
            logger.info(
                "closed a connection whose request headers took over %gs",
                self._header_read_timeout,
            )
            self.force_close()

    # -- errors answered before the app ---------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; cannot send the error")
        problem = self._problem(status, exc)
        request_id = uuid.uuid4().hex
        if problem.status >= 500:
            logger.error("error handling a request", exc_info=exc, extra={"request_id": request_id})
        else:
            # The exception's text quotes the refused bytes, which may hold a token.
            logger.info(
                "refused a request the parser could not read: %s",
                type(exc).__name__ if exc is not None else problem.slug,
                extra={"request_id": request_id},
            )
        body = problem.document(instance=None, request_id=request_id)
        response = web.Response(
            status=problem.status,
            text=json.dumps(body.model_dump(mode="json", exclude_none=True)),
            content_type=errors.PROBLEM_JSON,
            headers={**problem.headers, REQUEST_ID_HEADER: request_id},
        )
        response.force_close()
        return response

    def _problem(self, status: int, exc: BaseException | None) -> errors.Problem:
        if status >= 500:
            return errors.internal_error()
        too_many = isinstance(exc, BadHttpMessage) and "too many headers" in exc.message.lower()
        header = isinstance(exc, LineTooLong) and exc.args[1] == self.max_field_size
        if too_many or header:
            return errors.HEADER_FIELDS_TOO_LARGE(
                f"Each header may hold at most {self.max_field_size} bytes, "
                f"and a request at most {self.max_headers} headers.",
            )
        if isinstance(exc, LineTooLong):
            return errors.URI_TOO_LONG(
                f"The request line may hold at most {self.max_line_size} bytes.",
            )
        return errors.BAD_REQUEST("The request is not valid HTTP/1.1.")


class _ProblemServer(web.Server):
    """``web.Server`` whose connections are ``ProblemRequestHandler``s."""

    def __init__(self, app_server: web.Server, **handler_kwargs: Any) -> None:
        super().__init__(
            app_server.request_handler,
            request_factory=self._mark_and_make,
            handler_cancellation=app_server.handler_cancellation,
            **handler_kwargs,
        )
        self._make = app_server.request_factory
        self._handler_kwargs = handler_kwargs
        self._event_loop = asyncio.get_running_loop()

    def _mark_and_make(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web_protocol.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, ProblemRequestHandler):
            protocol.headers_parsed()
        return self._make(message, payload, protocol, writer, task)

    def __call__(self) -> ProblemRequestHandler:
        return ProblemRequestHandler(self, loop=self._event_loop, **self._handler_kwargs)


class ProblemAppRunner(web.AppRunner):
    """``web.AppRunner`` for the API app, with the limits of ``Settings``."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handler_kwargs: dict[str, Any] = {
            "header_read_timeout": settings.header_read_timeout,
            "max_field_size": settings.max_header_bytes,
            "max_line_size": MAX_REQUEST_LINE,
            "max_headers": MAX_HEADERS,
            "keepalive_timeout": KEEPALIVE_TIMEOUT,
            "access_log": None,
        }

    async def _make_server(self) -> web.Server:
        # AppRunner starts the app and builds its Server; serve that app through ours.
        return _ProblemServer(await super()._make_server(), **self._handler_kwargs)
