"""A real S3 HTTP endpoint on 127.0.0.1 for the state-dir tests: moto's S3 server
(``python -m moto.server``) in a child process, on a free port.

Why moto and not SeaweedFS: Debian 12 (this project's machines) has no SeaweedFS package, and
nothing here may download its binaries; moto's server is a PyPI package (a dev dependency) that
answers the S3 REST API over HTTP (s3fs's own tests run against it). The code under test sees
only an endpoint URL and the standard AWS variables, as it would with S3, SeaweedFS or MinIO.
Its data lives in the server's memory: a new server starts empty.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Static test credentials: the server accepts any, the client must send some.
ACCESS_KEY = "moods-test-access"
SECRET_KEY = "moods-test-secret-not-real"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalS3:
    log_path: Path
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)
    startup_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard variables botocore (and so s3fs) reads: credentials and endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self, timeout_s: float = 30.0) -> None:
        began = time.monotonic()
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = _free_port()
            with open(self.log_path, "ab") as log:
                # Output to a file: an undrained pipe would block the server.
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if httpx.get(self.endpoint + "/moto-api/", timeout=1).status_code == 200:
                        self.startup_seconds = time.monotonic() - began
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"the S3 server did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def filesystem(self):
        """An s3fs filesystem on this server (for a test's own checks), listings uncached."""
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint,
                                 use_listings_cache=False, skip_instance_cache=True)

    def make_bucket(self, prefix: str = "moods") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


def apply_env(server: LocalS3, environ=os.environ) -> dict[str, str | None]:
    """Point the standard variables at ``server`` (and drop those that would override them);
    returns the previous values for restoring."""
    previous = {}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE", *server.env()):
        previous[name] = environ.get(name)
        environ.pop(name, None)
    environ.update(server.env())
    # No ~/.aws files of the developer's: the variables above are the whole configuration.
    environ["AWS_CONFIG_FILE"] = os.devnull
    environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return previous
