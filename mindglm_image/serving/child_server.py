"""``mindglm-image serve`` in a child process on a free loopback port, and raw HTTP to it.

Used by the server tests and ``scripts/load_test_server.py``: they exercise the real server (uvicorn,
sockets, signals) rather than an in-process test client.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ChildServer:
    """Starts the server, waits for readiness, stops it with a signal; ``log()`` holds its output."""

    def __init__(self, args: list[str], api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.api_key = api_key
        self._log = tempfile.NamedTemporaryFile(prefix="mindglm-serve-", suffix=".log", delete=False)
        command = [sys.executable, "-m", "mindglm_image.cli", "serve", "--host", HOST, "--port", str(self.port), *args]
        if api_key:
            command += ["--api-key", api_key]
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.request("GET", "/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the server was not ready within {timeout} s:\n{self.log()[-3000:]}")

    def headers(self, **extra: str) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {**auth, **extra}

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
                timeout: float = 300) -> tuple[int, dict, bytes]:
        """One request on a fresh connection: (status, headers, body); dict bodies are sent as JSON."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers if headers is not None else self.headers())
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def open_generation(self, body: dict) -> socket.socket:
        """Send a generation request on a raw socket and return it unread (close it to disconnect)."""
        data = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers(**{"Content-Type": "application/json"}).items())
        sock = socket.create_connection((HOST, self.port))
        sock.sendall(f"POST /v1/images/generations HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n{head}\r\n".encode() + data)
        return sock

    def metric(self, name: str, labels: str = "") -> float:
        """Value of one sample of ``/metrics`` (``labels`` as written there, e.g. 'reason="disconnect"'), 0 if absent."""
        text = self.request("GET", "/metrics")[2].decode()
        match = re.search(rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def wait_metric(self, name: str, value: float, labels: str = "", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.metric(name, labels) != value:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}{{{labels}}} did not reach {value} within {timeout} s")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        """Send ``sig`` and wait for the exit code (killed after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def read_response(sock: socket.socket, timeout: float = 300) -> tuple[int, bytes]:
    """Status and body of the response on a socket from ``open_generation`` (the server closes it after)."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
