"""A loopback HTTP proxy in front of an S3 endpoint (moto's server) that injects faults and counts traffic.

    proxy = FaultProxy(upstream="http://127.0.0.1:5000").start()   # proxy.url: the endpoint clients use
    proxy.fail(503, count=3)          # the next 3 requests answer 503 SlowDown, then requests go through
    proxy.fail(500, seconds=2.0)      # every request answers 500 InternalError for 2 s
    proxy.stall(seconds=3.0)          # requests get no answer for 3 s (each is held until then: time-outs)
    proxy.gets("corpus/openus/shard-000001.tar"), proxy.bytes_out   # GETs of a key, body bytes sent
    proxy.stop()

`mbps` throttles every answer's body to that many MB/s (a remote object store's per-request rate). Tests and
benchmarks only: it listens on 127.0.0.1 and forwards to the one upstream it is given.
"""

import contextlib
import http.client
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERRORS = {500: "InternalError", 503: "SlowDown"}


def empty_moto(url: str) -> None:
    """Delete every bucket of moto's server at `url`. Every moto server started in one process (a
    ThreadedMotoServer) serves the same in-process backend, so a test starts from an empty S3 only this way."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy of the environment
    direct.open(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()


@contextlib.contextmanager
def moto_endpoint(address: str = "127.0.0.1", port: int = 0):
    """moto's real HTTP S3 server on `address`, empty at the start; yields its URL and stops it after."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=address, port=port, verbose=False)
    server.start()
    try:
        host, bound = server.get_host_and_port()
        url = f"http://{host}:{bound}"
        empty_moto(url)
        yield url
    finally:
        server.stop()
CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, upstream: str, mbps: float | None = None):
        parts = urlsplit(upstream)
        self.upstream, self.mbps = (parts.hostname, parts.port), mbps
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # (method, path) -> requests received, faults included
        self.faulted = 0  # requests answered with a fault
        self.bytes_out = 0  # body bytes forwarded to clients
        self._status, self._count, self._until, self._stall_until = None, 0, 0.0, 0.0
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FaultProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fault-proxy").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def fail(self, status: int, count: int = 0, seconds: float = 0.0) -> None:
        """Answer `status` (500 or 503) to the next `count` requests, or to every request for `seconds`."""
        with self.lock:
            self._status, self._count, self._until = status, count, time.monotonic() + seconds

    def stall(self, seconds: float) -> None:
        """Hold every request received in the next `seconds` without an answer until they have passed."""
        with self.lock:
            self._stall_until = time.monotonic() + seconds

    def gets(self, key: str) -> int:
        """GET requests received for bucket/key (faulted ones included)."""
        return self.requests[("GET", "/" + key.lstrip("/"))]

    def _fault(self) -> tuple[str, object]:
        """('stall', until) | ('status', code) | ('pass', None) for a request arriving now."""
        with self.lock:
            now = time.monotonic()
            if now < self._stall_until:
                return "stall", self._stall_until
            if self._status and (self._count > 0 or now < self._until):
                self._count = max(0, self._count - 1)
                self.faulted += 1
                return "status", self._status
            return "pass", None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: tests read the counters
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests[(self.command, self.path.split("?")[0])] += 1
                kind, value = proxy._fault()
                if kind == "stall":
                    while time.monotonic() < value and not proxy._stopping.is_set():
                        time.sleep(0.05)
                    self.close_connection = True
                    return
                if kind == "status":
                    self._answer(value, {"Content-Type": "application/xml"},
                                 f"<Error><Code>{ERRORS.get(value, 'Error')}</Code><Message>injected by the test "
                                 f"proxy</Message></Error>".encode())
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                upstream = conn.getresponse()
                data = upstream.read()
                skip = {"connection", "transfer-encoding"} | ({"content-length"} if self.command != "HEAD" else set())
                self._answer(upstream.status, {k: v for k, v in upstream.getheaders() if k.lower() not in skip}, data)
                conn.close()

            def _answer(self, status: int, headers: dict, body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not any(k.lower() == "content-length" for k in headers):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                for i in range(0, len(body), CHUNK):
                    piece = body[i:i + CHUNK]
                    self.wfile.write(piece)
                    if proxy.mbps:
                        time.sleep(len(piece) / (proxy.mbps * 1e6))
                with proxy.lock:
                    proxy.bytes_out += len(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        return Handler
