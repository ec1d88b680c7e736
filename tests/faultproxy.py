"""A fault-injecting HTTP reverse proxy for tests, in front of an S3 endpoint (moto).

It runs in background threads (one accept loop, one thread per client connection) and listens
on a free loopback port. Each request the client sends is parsed far enough to know where it
ends (Content-Length or chunked), then either forwarded on a fresh upstream connection or
answered with a fault, as the current mode says:

    proxy.passthrough()                         forward everything
    proxy.error503(n=None)                      S3 "503 SlowDown" XML answers, Connection: close
    proxy.error(403, "AccessDenied", n=None)    any other S3-style error answer
    proxy.reset(n=None)                         close the connection abruptly (RST, no answer)
    proxy.corrupt(n=None)                       forward the request with one byte of its body
                                                flipped (the middle one): corruption in transit
    proxy.stop() / proxy.start()                close the listener and every open connection
                                                (connection refused), and listen again on the
                                                same port

``n`` is how many matching requests get the fault (None: all until the mode changes); after
the n-th the proxy passes requests again. ``methods`` and ``match`` narrow a fault to requests
with one of those HTTP methods and/or whose request line contains ``match`` (for example
``match="partNumber="`` fails only UploadPart). Requests seen are counted per method
(``counts``), faults served per kind (``faults``: "503", "403", "reset", ...), and every request
line is kept with what was done with it (``requests(...)`` filters them). Requests that were
forwarded also keep the status the server answered and whether they carried ``Content-MD5``
(``answers``).

Client connections stay alive across requests (HTTP/1.1 keep-alive); upstream, every request
gets its own connection, so a request is never sent into a connection the server already closed.
``Expect: 100-continue`` is answered by the proxy itself once it decided to forward the request,
and is not passed on.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK = 1024 * 1024
MAX_HEAD = 64 * 1024
UPSTREAM_TIMEOUT = 120.0
DRAIN_SECONDS = 2.0
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"}


class _Closed(Exception):
    """The peer went away (or the proxy was stopped) in the middle of a message."""


@dataclass
class _Rule:
    kind: str  # "error", "reset" or "corrupt"
    remaining: int | None
    methods: frozenset[str] | None
    match: str | None
    header: bytes | None = None  # only requests carrying this header (lower-case name)
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."

    def applies(self, request) -> bool:
        if self.methods is not None and request.method not in self.methods:
            return False
        if self.header is not None and request.header(self.header) is None:
            return False
        return self.match is None or self.match in request.line


@dataclass
class _Request:
    method: str
    target: str
    version: str
    line: str
    headers: list[tuple[bytes, bytes]]  # raw (name, value), in order

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.strip()
        return None

    @property
    def chunked(self) -> bool:
        return b"chunked" in (self.header(b"transfer-encoding") or b"").lower()

    @property
    def content_length(self) -> int:
        value = self.header(b"content-length")
        return int(value) if value else 0

    @property
    def expects_continue(self) -> bool:
        return (self.header(b"expect") or b"").lower() == b"100-continue"

    @property
    def wants_close(self) -> bool:
        connection = (self.header(b"connection") or b"").lower()
        return b"close" in connection or (self.version == "HTTP/1.0"
                                          and b"keep-alive" not in connection)


class FaultProxy:
    def __init__(self, upstream_url: str, host: str = "127.0.0.1", port: int = 0):
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only plain http upstreams are supported, not {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.host = host
        self.port = port
        self.counts: collections.Counter[str] = collections.Counter()  # method -> requests seen
        self.faults: collections.Counter[str] = collections.Counter()  # kind -> faults served
        self.history: list[tuple[float, str, str, str]] = []  # (time, outcome, method, line)
        # forwarded requests: (method, line, body length, carried Content-MD5, server's status)
        self.answers: list[tuple[str, str, int, bool, int]] = []
        self._lock = threading.Lock()
        self._rule: _Rule | None = None
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()  # open client and upstream connections
        self._threads: set[threading.Thread] = set()
        self._request_ids = 0

    # -- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> FaultProxy:
        """Listen (again, on the same port once one was chosen)."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        listener.settimeout(0.05)  # the accept loop polls its stop flag
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping = threading.Event()
        self._accepting = threading.Thread(
            target=self._accept_loop, args=(listener, self._stopping),
            name=f"faultproxy-accept-{self.port}", daemon=True)
        self._accepting.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection: the endpoint is gone."""
        if self._listener is None:
            return
        self._stopping.set()
        self._accepting.join(timeout=5)
        self._listener.close()
        self._listener = None
        self._accepting = None
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            _abort(sock, close=False)  # wakes the thread blocked on it; it closes its sockets
        for thread in threads:
            thread.join(timeout=5)

    def close(self) -> None:
        self.passthrough()
        self.stop()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- modes ------------------------------------------------------------------------------

    def passthrough(self) -> None:
        with self._lock:
            self._rule = None

    def error503(self, n: int | None = None, *, methods=None, match: str | None = None) -> None:
        self.error(503, "SlowDown", "Please reduce your request rate.", n,
                   methods=methods, match=match)

    def error(self, status: int, code: str, message: str = "injected by faultproxy",
              n: int | None = None, *, methods=None, match: str | None = None,
              header: str | None = None) -> None:
        """``header``: only requests that carry it, e.g. "x-amz-copy-source" (server copies)."""
        self._set(_Rule("error", n, _methods(methods), match,
                        header.lower().encode() if header else None, status, code, message))

    def reset(self, n: int | None = None, *, methods=None, match: str | None = None) -> None:
        self._set(_Rule("reset", n, _methods(methods), match))

    def corrupt(self, n: int | None = None, *, methods=None, match: str | None = None) -> None:
        """Forward matching requests with the middle byte of their body flipped."""
        self._set(_Rule("corrupt", n, _methods(methods), match))

    def _set(self, rule: _Rule) -> None:
        if rule.remaining is not None and rule.remaining < 1:
            raise ValueError("n must be at least 1 (or None for every request)")
        with self._lock:
            self._rule = rule

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode()

    def _mode(self) -> str:
        rule = self._rule
        if not self.running:
            return "stopped"
        if rule is None:
            return "pass"
        what = f"error {rule.status} {rule.code}" if rule.kind == "error" else rule.kind
        return f"{what}, {'all' if rule.remaining is None else rule.remaining} to go"

    # -- observing --------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[FaultProxy], bool], timeout: float = 30.0) -> bool:
        """Poll until ``predicate(self)`` is true; False if it was not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def requests(self, method: str | None = None, match: str | None = None,
                 outcome: str | None = None) -> list[str]:
        """Request lines seen, optionally only those with this method, containing ``match``,
        and answered so ("pass", "503", "reset", ...)."""
        with self._lock:
            history = list(self.history)
        return [line for _, done, verb, line in history
                if (method is None or verb == method.upper())
                and (match is None or match in line)
                and (outcome is None or done == outcome)]

    def describe(self, last: int = 40) -> str:
        """Counts and the latest requests, for assertion messages."""
        with self._lock:
            lines = [f"counts={dict(self.counts)} faults={dict(self.faults)} mode={self._mode()}"]
            lines += [f"  {t:.3f} {outcome:>6} {line}" for t, outcome, _, line in
                      self.history[-last:]]
        return "\n".join(lines)

    def _decide(self, request: _Request) -> _Rule | None:
        with self._lock:
            self.counts[request.method] += 1
            rule = self._rule
            if rule is None or not rule.applies(request):
                outcome = None
            else:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rule = None
                outcome = rule
            kind = "pass" if outcome is None else (
                str(outcome.status) if outcome.kind == "error" else outcome.kind)
            if outcome is not None:
                self.faults[kind] += 1
            self.history.append((time.monotonic(), kind, request.method, request.line))
            return outcome

    # -- connections ------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(client,),
                                      name=f"faultproxy-conn-{self.port}", daemon=True)
            with self._lock:
                if stopping.is_set():  # stop() is already cutting connections
                    _abort(client)
                    return
                self._sockets.add(client)
                self._threads.add(thread)
            thread.start()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    def _serve(self, client: socket.socket) -> None:
        reader = client.makefile("rb", buffering=CHUNK)
        try:
            while True:
                request = _read_request(reader)
                if request is None:
                    return  # the client closed its idle connection
                rule = self._decide(request)
                if rule is not None and rule.kind == "reset":
                    _abort(client)
                    return
                if rule is not None and rule.kind == "error":
                    self._answer_error(client, reader, request, rule)
                    return
                if not self._forward(client, reader, request, corrupt=rule is not None):
                    return
        except (_Closed, OSError, ValueError, IndexError):
            pass  # the peer went away, the proxy was stopped, or garbage came in: hang up
        finally:
            reader.close()
            client.close()
            self._track(client, add=False)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _answer_error(self, client, reader, request: _Request, rule: _Rule) -> None:
        if not request.expects_continue:
            _relay_body(reader, None, request)  # read it all: closing on unread bytes is an RST
        with self._lock:
            self._request_ids += 1
            request_id = f"FAULTPROXY{self._request_ids:08d}"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{rule.code}</Code><Message>{rule.message}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>faultproxy</HostId></Error>"
        ).encode()
        reason = {403: "Forbidden", 500: "Internal Server Error", 502: "Bad Gateway",
                  503: "Slow Down"}.get(
            rule.status, "Error")
        head = (
            f"HTTP/1.1 {rule.status} {reason}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\n"
            "Server: faultproxy\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        client.sendall(head if request.method == "HEAD" else head + body)
        # A client that was waiting to send its body with 100-continue may send it anyway:
        # take whatever comes until it closes, then close without a reset.
        client.shutdown(socket.SHUT_WR)
        client.settimeout(DRAIN_SECONDS)
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            while time.monotonic() < deadline and client.recv(CHUNK):
                pass
        except OSError:
            pass

    def _forward(self, client, reader, request: _Request, corrupt: bool = False) -> bool:
        """Forward one request on a new upstream connection; True to keep the client's open.
        ``corrupt``: flip the middle byte of its body on the way."""
        try:
            upstream = socket.create_connection(self.upstream, timeout=UPSTREAM_TIMEOUT)
        except OSError as exc:
            self._answer_error(client, reader, request, _Rule(
                "error", None, None, None, status=502, code="BadGateway",
                message=f"faultproxy: upstream {self.upstream} unreachable: {exc}"))
            return False
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(upstream, add=True)
        upstream_reader = upstream.makefile("rb", buffering=CHUNK)
        try:
            if self._stopping.is_set():
                raise _Closed()
            head = [f"{request.method} {request.target} {request.version}\r\n".encode()]
            for name, value in request.headers:
                if name.lower() in HOP_BY_HOP or name.lower() == b"expect":
                    continue
                head.append(name + b": " + value + b"\r\n")
            head.append(b"Connection: close\r\n\r\n")
            upstream.sendall(b"".join(head))
            if request.expects_continue:
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            _relay_body(reader, upstream, request, corrupt)
            return self._relay_response(upstream_reader, client, request)
        finally:
            upstream_reader.close()
            upstream.close()
            self._track(upstream, add=False)

    def _relay_response(self, upstream_reader, client, request: _Request) -> bool:
        while True:
            status_line = upstream_reader.readline(MAX_HEAD)
            if not status_line.endswith(b"\r\n"):
                raise _Closed()
            headers = _read_headers(upstream_reader)
            status = int(status_line.split()[1])
            if 100 <= status < 200:
                continue  # interim answers (the client got its own 100 Continue already)
            break
        with self._lock:
            self.answers.append((request.method, request.line, request.content_length,
                                 request.header(b"content-md5") is not None, status))
        values = {name.lower(): value.strip() for name, value in headers}
        if request.method == "HEAD" or status in (204, 304):
            framing = "none"
        elif b"chunked" in values.get(b"transfer-encoding", b"").lower():
            framing = "chunked"
        elif b"content-length" in values:
            framing = "length"
        else:
            framing = "eof"  # ends when upstream closes: so must the client's connection
        keep = framing != "eof" and not request.wants_close
        head = [status_line]
        head += [name + b": " + value + b"\r\n" for name, value in headers
                 if name.lower() not in HOP_BY_HOP]
        head.append(b"\r\n" if keep else b"Connection: close\r\n\r\n")
        client.sendall(b"".join(head))
        if framing == "chunked":
            _relay_chunked(upstream_reader, client)
        elif framing == "length":
            _relay_exact(upstream_reader, client, int(values[b"content-length"]))
        elif framing == "eof":
            while chunk := upstream_reader.read1(CHUNK):
                client.sendall(chunk)
        return keep


# -- HTTP/1.1 framing helpers ---------------------------------------------------------------


def _methods(methods) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        methods = [methods]
    return frozenset(m.upper() for m in methods)


def _abort(sock: socket.socket, close: bool = True) -> None:
    """Reset the connection (RST instead of FIN), or with close=False only cut it so that a
    thread blocked on it wakes up and closes it with the reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if close:
            sock.close()
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_headers(reader) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    total = 0
    while True:
        line = reader.readline(MAX_HEAD)
        total += len(line)
        if not line.endswith(b"\n") or total > MAX_HEAD:
            raise _Closed()
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.rstrip(b"\r\n").partition(b":")
        if not sep:
            raise ValueError(f"malformed header line {line!r}")
        headers.append((name.strip(), value.strip()))


def _read_request(reader) -> _Request | None:
    line = reader.readline(MAX_HEAD)
    while line in (b"\r\n", b"\n"):  # tolerated before a request line
        line = reader.readline(MAX_HEAD)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise _Closed()
    text = line.decode("latin-1").rstrip("\r\n")
    method, target, version = text.split(" ", 2)
    return _Request(method.upper(), target, version, text, _read_headers(reader))


def _relay_body(reader, upstream: socket.socket | None, request: _Request,
                corrupt: bool = False) -> None:
    """Pass the request body on to ``upstream`` (or drop it when None); ``corrupt`` flips the
    middle byte of a body of known length."""
    if request.chunked:
        _relay_chunked(reader, upstream)
    elif request.content_length:
        flip_at = request.content_length // 2 if corrupt else None
        _relay_exact(reader, upstream, request.content_length, flip_at)


def _relay_exact(reader, sink: socket.socket | None, length: int,
                 flip_at: int | None = None) -> None:
    sent = 0
    while sent < length:
        chunk = reader.read1(min(length - sent, CHUNK))
        if not chunk:
            raise _Closed()
        if flip_at is not None and sent <= flip_at < sent + len(chunk):
            at = flip_at - sent
            chunk = chunk[:at] + bytes([chunk[at] ^ 0x01]) + chunk[at + 1:]
        if sink is not None:
            sink.sendall(chunk)
        sent += len(chunk)


def _relay_chunked(reader, sink: socket.socket | None) -> None:
    """Copy a chunked body up to and including its trailers, unchanged."""
    while True:
        size_line = reader.readline(MAX_HEAD)
        if not size_line.endswith(b"\n"):
            raise _Closed()
        if sink is not None:
            sink.sendall(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers, then the empty line
                line = reader.readline(MAX_HEAD)
                if not line.endswith(b"\n"):
                    raise _Closed()
                if sink is not None:
                    sink.sendall(line)
                if line in (b"\r\n", b"\n"):
                    return
        _relay_exact(reader, sink, size + 2)  # the data and its CRLF
