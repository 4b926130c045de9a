"""Small test helpers shared by several test modules."""

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path

from apiexec import Event


class Recorder:
    """Counts invocations per key and remembers the start order, thread-safely."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}
        self.order = []
        self.start_times = []

    def note(self, key):
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            self.order.append(key)
            self.start_times.append(time.monotonic())


def work(recorder, key, *, delay=0.0, gate=None, result=None, error=None):
    """An Event that records its start, optionally waits, then returns or raises."""

    def run():
        recorder.note(key)
        if gate is not None:
            gate.wait(10)
        if delay:
            time.sleep(delay)
        if error is not None:
            raise error
        return key if result is None else result

    return Event(run)


class FakeClock:
    """A hand-driven clock and waiter (see ``apiexec.clock.Waiter``).

    ``now()`` only moves when the test calls ``advance()`` (or, with
    ``auto_advance=True``, when code waits with a timeout: the clock jumps to
    the end of that wait at once, as if the time had passed). ``advance()``
    wakes every thread blocked in ``wait()``/``sleep()``, so threaded code
    re-checks its predicate exactly at the new time.
    """

    #: Real seconds a blocked wait may take before the test is told it hangs.
    REAL_GUARD = 10.0

    def __init__(self, start=0.0, *, auto_advance=False):
        self._now = float(start)
        self.auto_advance = auto_advance
        self._lock = threading.Lock()
        self._tick = threading.Condition(self._lock)
        self._waiting = set()
        self.waits = []  # every timeout asked for, in order

    def now(self):
        with self._lock:
            return self._now

    __call__ = now  # usable where a plain ``clock()`` callable is expected

    def advance(self, seconds):
        with self._lock:
            self._now += seconds
            waiting = list(self._waiting)
            self._tick.notify_all()
        for cond in waiting:
            with cond:
                cond.notify_all()

    def wait(self, cond, timeout):
        with self._lock:
            self.waits.append(timeout)
            if timeout is not None and timeout <= 0:
                return False
            if self.auto_advance and timeout is not None:
                self._now += timeout
                return False
            deadline = None if timeout is None else self._now + timeout
            self._waiting.add(cond)
        try:
            woken = cond.wait(self.REAL_GUARD)
            if not woken and deadline is None:
                raise AssertionError("FakeClock.wait: nothing woke a wait without timeout")
            return deadline is None or self.now() < deadline
        finally:
            with self._lock:
                self._waiting.discard(cond)

    def sleep(self, seconds, stop=None):
        with self._lock:
            self.waits.append(seconds)
            if self.auto_advance or seconds <= 0:
                self._now += max(0.0, seconds)
                return bool(stop is not None and stop.is_set())
            deadline = self._now + seconds
            while self._now < deadline and not (stop is not None and stop.is_set()):
                if not self._tick.wait(self.REAL_GUARD):
                    raise AssertionError("FakeClock.sleep: the test never advanced the clock")
            return bool(stop is not None and stop.is_set())


class ScriptedServer:
    """A loopback TCP server that answers each connection with a script, byte by byte if asked.

    ``script(conn, request)`` gets the socket and the parsed request (``method``, ``path``,
    ``headers`` with lower-case names, ``body``) and writes whatever it likes: a normal answer,
    a slow trickle, a cut-off body, a redirect. Every request is kept in ``requests``.
    Use it as a context manager; leaving it closes the listener and every open connection.
    """

    def __init__(self, script):
        import socket

        self.script = script
        self.requests = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                while not self._closed.is_set():
                    request = self._read_request(conn)
                    if request is None:
                        return
                    self.requests.append(request)
                    if self.script(conn, request) is not True:  # True: keep the connection for another request
                        return
        except OSError:
            pass

    @staticmethod
    def _read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return {"method": method, "path": path, "headers": headers, "body": body, "raw_head": head}

    def close(self):
        self._closed.set()
        self._sock.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http_response(status, body=b"", headers=None, reason="OK"):
    """The bytes of a complete HTTP/1.1 response with a Content-Length."""
    if isinstance(body, str):
        body = body.encode()
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files), for TLS servers on loopback."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apiexec test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def server_tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server-side TLS context with a fresh :func:`self_signed_certificate`, and the certificate (the CA to trust)."""
    cert, key = self_signed_certificate(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


def free_port() -> int:
    """A loopback port nobody listens on (for a moment)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeEncoding:
    """Stands in for tiktoken.Encoding: one token per whitespace-separated word."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode_ordinary(self, text: str) -> list[int]:
        return list(range(len(text.split())))
