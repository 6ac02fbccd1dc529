"""The live server: websocket connections over asyncio, one batched decoding loop, the web page.

Built on the ``websockets`` package (its asyncio implementation). One task per connection
receives and validates the client's messages (:mod:`xtrans.serve.protocol`) and feeds the
:class:`~xtrans.serve.engine.Engine`; a second task per connection sends the engine's messages,
so that a slow client never holds up the others. One decoding task runs the engine's steps: it
collects the ready chunks of all connections, computes them in ``ServerOptions.workers`` worker
threads at once (batched encoder calls and search steps, each batch on the next free worker)
while the event loop keeps receiving, and hands out each batch's results as soon as it is computed.

HTTP: ``GET /`` is the microphone page, ``GET /static/NAME`` its scripts (files inside the
package, :data:`STATIC_DIR`); websocket connections are accepted at ``/ws`` only (404 elsewhere).

Limits and faults (each affects one connection only): see the close codes of
:mod:`xtrans.serve.protocol`. A client that goes away mid-stream has its stream dropped at once.
Every connection is logged when it opens and when it closes, with its duration, audio seconds
and close code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from xtrans.serve.engine import EndpointConfig, Engine, Event, Work
from xtrans.serve.protocol import (CLOSE_INTERNAL_ERROR, CLOSE_MESSAGE_TOO_BIG, CLOSE_POLICY_VIOLATION,
                                   CLOSE_UNSUPPORTED_DATA, DEFAULT_FORMAT, DEFAULT_SAMPLE_RATE,
                                   End, ProtocolError, Start, decode_audio, dumps, error_message, parse_text)

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The web page's files (``index.html`` and its scripts)."""

WS_PATH = "/ws"

_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class ServerOptions:
    """How the server listens and what it allows; ``None`` = no limit.

    Attributes:
        host, port: where to listen (port 0: any free port, see :attr:`StreamingServer.port`).
        max_connections: most open websocket connections; one more gets an error and 1008.
        max_batch: most streams per batched decoding call.
        max_message_bytes: largest client message; a larger one gets an error and 1009.
        idle_timeout_s: a client that sends nothing for this long (before ``end``) gets an error
            and 1008.
        endpoint: the endpointing rules.
        workers: threads that compute the batches of a decoding step at once (one batch at a time
            each; with more streams than one, every worker gets some). A backend computes a batch on
            one thread when its results must not depend on the batch (the ONNX backend), so this is
            how such a server uses more than one core.
    """

    host: str = "127.0.0.1"
    port: int = 6006
    max_connections: Optional[int] = 100
    max_batch: int = 32
    max_message_bytes: int = 1 << 20
    idle_timeout_s: Optional[float] = 30.0
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    workers: int = 1

    def __post_init__(self):
        checks = (("max_connections", self.max_connections, True), ("max_batch", self.max_batch, False),
                  ("workers", self.workers, False),
                  ("max_message_bytes", self.max_message_bytes, False),
                  ("idle_timeout_s", self.idle_timeout_s, True))
        for name, value, may_be_none in checks:
            if value is None and may_be_none:
                continue
            if value is None or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name}: expected a positive number{' or None' if may_be_none else ''}, "
                                 f"found {value!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: expected 0..65535, found {self.port}")


class _Connection:
    """One client: its engine stream, its outgoing queue and what the close log line reports."""

    def __init__(self, number: int, ws: ServerConnection):
        self.number = number
        self.ws = ws
        self.stream: Optional[int] = None
        self.format = DEFAULT_FORMAT
        self.sample_rate = DEFAULT_SAMPLE_RATE
        self.hotwords: Optional[Tuple[str, ...]] = None  # the start message's; None = the server's
        self.hotwords_score: Optional[float] = None
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.sender: Optional[asyncio.Task] = None
        self.opened = time.monotonic()
        self.audio_samples = 0  # at the client's rate
        self.got_audio = False
        self.ended = False


class StreamingServer:
    """The websocket server over one :class:`~xtrans.serve.engine.Engine`.

    ::

        server = StreamingServer(TorchBackend(s2t), ServerOptions(port=6006))
        await server.start()          # listening; server.port is the bound port
        await server.wait_closed()    # or: await server.stop()

    Args:
        backend: the recognizer (:class:`~xtrans.serve.backend.Backend`).
        options: limits and endpointing.
    """

    def __init__(self, backend, options: ServerOptions = ServerOptions()):
        self.options = options
        self.engine = Engine(backend, options.endpoint, max_batch=options.max_batch, workers=options.workers)
        self.port: Optional[int] = None
        self._server = None
        self._decoder: Optional[asyncio.Task] = None
        self._wake: Optional[asyncio.Event] = None
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._connections: Dict[int, _Connection] = {}
        self._by_stream: Dict[int, _Connection] = {}
        self._numbers = itertools.count(1)

    @property
    def num_connections(self) -> int:
        """Open websocket connections."""
        return len(self._connections)

    @property
    def url(self) -> str:
        """The websocket URL clients connect to."""
        return f"ws://{self.options.host}:{self.port}{WS_PATH}"

    async def start(self) -> None:
        """Starts listening and the decoding task."""
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(self.options.workers,
                                                               thread_name_prefix="xtrans-decode")
        self._decoder = asyncio.create_task(self._decode_loop())
        limit = self.options.max_message_bytes
        self._server = await serve(
            self._handle, self.options.host, self.options.port, process_request=self._http,
            # a message a little over the limit gets the protocol's error; the library refuses far larger ones
            max_size=2 * limit + 4096, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("listening on %s (page: http://%s:%d/), %s", self.url, self.options.host, self.port,
                    self.engine.backend.description)

    async def stop(self) -> None:
        """Closes every connection (1001), stops listening and decoding."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._decoder is not None:
            self._decoder.cancel()
            try:
                await self._decoder
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def wait_closed(self) -> None:
        """Serves until the server is closed (e.g. by a signal)."""
        await self._server.wait_closed()

    # ------------------------------------------------------------------ HTTP
    def _http(self, connection: ServerConnection, request: Request) -> Optional[Response]:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            return None  # the websocket handshake
        name = "index.html" if path in ("/", "/index.html") else path[len("/static/"):] if path.startswith("/static/") else None
        file = STATIC_DIR / name if name and "/" not in name and not name.startswith(".") else None
        if file is None or not file.is_file():
            return connection.respond(HTTPStatus.NOT_FOUND, f"not found: {path}; the websocket is at {WS_PATH}\n")
        body = file.read_bytes()
        headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                           ("Content-Length", str(len(body))),
                           ("Content-Type", _CONTENT_TYPES.get(file.suffix, "application/octet-stream")),
                           ("Cache-Control", "no-cache")])
        return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)

    # ------------------------------------------------------------------ connections
    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Connection(next(self._numbers), ws)
        peer = ws.remote_address[0] if ws.remote_address else "?"
        full = self.options.max_connections is not None and len(self._connections) >= self.options.max_connections
        self._connections[conn.number] = conn
        logger.info("connection %d open from %s", conn.number, peer)
        conn.sender = asyncio.create_task(self._send_loop(conn))
        try:
            if full:
                raise ProtocolError(CLOSE_POLICY_VIOLATION, f"server full: {self.options.max_connections} connections "
                                                            "are open (--max-connections); try again later")
            await self._receive_loop(conn)
        except ProtocolError as err:
            self._drop_stream(conn)
            conn.outbox.put_nowait((error_message(err.message), err.code))
        except ConnectionClosed:  # the client went away: nothing more to send
            self._drop_stream(conn)
            conn.sender.cancel()
        except Exception as err:  # a bug here must not stop the server
            logger.exception("connection %d: handler failed", conn.number)
            self._drop_stream(conn)
            conn.outbox.put_nowait((error_message(f"server error: {type(err).__name__}"), CLOSE_INTERNAL_ERROR))
        try:
            await asyncio.wait({conn.sender})
        finally:
            conn.sender.cancel()
            self._drop_stream(conn)
            del self._connections[conn.number]
            seconds = conn.audio_samples / conn.sample_rate
            logger.info("connection %d closed (%s %s) after %.2f s, %.2f s of audio", conn.number,
                        ws.close_code, ws.close_reason or "-", time.monotonic() - conn.opened, seconds)

    async def _receive_loop(self, conn: _Connection) -> None:
        """Reads the client's messages until ``end`` (then returns; the sender finishes the connection)."""
        ws = conn.ws
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), self.options.idle_timeout_s)
            except asyncio.TimeoutError:
                raise ProtocolError(CLOSE_POLICY_VIOLATION,
                                    f"idle: no message for {self.options.idle_timeout_s:g} s (--idle-timeout-s)") from None
            size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
            if size > self.options.max_message_bytes:
                raise ProtocolError(CLOSE_MESSAGE_TOO_BIG, f"message of {size} bytes: expected at most "
                                                           f"{self.options.max_message_bytes} (--max-message-bytes)")
            if isinstance(message, str):
                msg = parse_text(message)
                if isinstance(msg, Start):
                    if conn.stream is not None:
                        raise ProtocolError(CLOSE_POLICY_VIOLATION, "start: expected at most one start message, "
                                                                    "before any audio")
                    conn.format, conn.sample_rate = msg.format, msg.sample_rate
                    conn.hotwords, conn.hotwords_score = msg.hotwords, msg.hotwords_score
                    self._open_stream(conn)
                    continue
                assert isinstance(msg, End)
                self._open_stream(conn)
                self.engine.end(conn.stream)
                self._wake.set()
                # after end the client only listens; anything it sends is a protocol error
                await self._after_end(conn)
                return
            samples = decode_audio(message, conn.format)
            self._open_stream(conn)
            conn.audio_samples += len(samples)
            self.engine.accept(conn.stream, samples)
            self._wake.set()

    async def _after_end(self, conn: _Connection) -> None:
        """After ``end``: waits until the sender is done; a message from the client is an error."""
        receive = asyncio.create_task(conn.ws.recv())
        try:
            finished, _ = await asyncio.wait({receive, conn.sender}, return_when=asyncio.FIRST_COMPLETED)
            if receive in finished:
                receive.result()  # ConnectionClosed: the client went away
                raise ProtocolError(CLOSE_POLICY_VIOLATION, "expected nothing after the end message")
        finally:
            receive.cancel()

    def _open_stream(self, conn: _Connection) -> None:
        if conn.stream is None:
            context = None
            if conn.hotwords is not None:
                try:  # greedy search, a phrase the model's tokens cannot spell
                    context = self.engine.backend.stream_context(conn.hotwords, conn.hotwords_score)
                except (TypeError, ValueError) as err:
                    raise ProtocolError(CLOSE_UNSUPPORTED_DATA, str(err)) from None
            try:
                conn.stream = self.engine.open(conn.sample_rate, context)
            except ValueError as err:
                raise ProtocolError(CLOSE_UNSUPPORTED_DATA, f"sample_rate: {err}") from None
            self._by_stream[conn.stream] = conn

    def _drop_stream(self, conn: _Connection) -> None:
        if conn.stream is not None:
            self.engine.close(conn.stream)
            self._by_stream.pop(conn.stream, None)

    async def _send_loop(self, conn: _Connection) -> None:
        """Sends the connection's messages in order; closes after ``done`` or an error."""
        while True:
            message, close_code = await conn.outbox.get()
            try:
                await conn.ws.send(dumps(message))
                if close_code is not None:
                    reason = message.get("message", "")[:100] if message["type"] == "error" else ""
                    await conn.ws.close(close_code, reason.encode("utf-8")[:120].decode("utf-8", "ignore"))
                    return
            except ConnectionClosed:
                return

    # ------------------------------------------------------------------ decoding
    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            work = self.engine.collect()
            if work is None:
                await self._wake.wait()
                continue
            # each batch on the next free worker; its results go out as soon as it is computed
            running = {loop.run_in_executor(self._executor, self.engine.compute, Work([batch])): batch
                       for batch in work.batches}
            while running:
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in finished:
                    batch = running.pop(future)
                    try:
                        events = self.engine.apply(future.result())
                    except Exception as err:  # a bug in the loop: fail these streams, keep serving
                        logger.exception("decoding step failed")
                        events = []
                        for item in batch:
                            self.engine.close(item.stream)
                            events.append(Event(item.stream, error_message(f"decoding failed: {type(err).__name__}"),
                                                CLOSE_INTERNAL_ERROR))
                    for event in events:
                        self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        conn = self._by_stream.get(event.stream)
        if conn is None:
            return
        if event.close_code is not None:
            self._by_stream.pop(event.stream, None)
        conn.outbox.put_nowait((event.message, event.close_code))


class BackgroundServer:
    """A :class:`StreamingServer` on its own event loop in a daemon thread (tests, notebooks).

    ::

        with BackgroundServer(TorchBackend(s2t), ServerOptions(port=0)) as server:
            ... connect to server.url ...

    Args:
        backend, options: as :class:`StreamingServer`.
    """

    def __init__(self, backend, options: ServerOptions = ServerOptions(port=0)):
        self.server = StreamingServer(backend, options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="xtrans-serve", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs ``fn()`` on the server's event loop and returns its result (e.g. to read counters)."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
