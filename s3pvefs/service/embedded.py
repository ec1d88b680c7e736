"""A throw-away local S3 (a moto server process) for when no endpoint and no bucket are set.

moto keeps everything in memory: the data is gone when the server stops, i.e. at unmount.
The server runs in its own session so that a Ctrl-C in the terminal reaches only s3pvefs, which
still needs the server while it uploads dirty files during unmount; it is stopped afterwards.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from s3pvefs.config.settings import Config
from s3pvefs.errors import ConfigError

log = logging.getLogger(__name__)

LOCAL_BUCKET = "s3pvefs-local"
LOCAL_KEY = "local"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# Talk to the loopback server directly, never through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGTERM the server if s3pvefs dies without stopping it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class LocalS3:
    """One moto server process on a free loopback port. Use as a context manager.

    The test suite runs its moto server through it too: with ``bucket=None`` no bucket is
    created, and ``env`` adds moto settings to the server's environment.
    """

    def __init__(self, state_dir: Path | None = None, bucket: str | None = LOCAL_BUCKET,
                 env: dict[str, str] | None = None):
        self.bucket = bucket
        self.extra_env = env or {}
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="s3pvefs-local-s3-"))
        self.log_path = self.state_dir / "moto-server.log"
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("local S3 is not started")
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> "LocalS3":
        if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
            raise ConfigError(
                "no S3 endpoint is configured and the embedded local S3 is not installed: "
                "install the 'local' extra (pip install 's3pvefs[local]', which bash scripts/run "
                "does), or give --endpoint-url and --bucket"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = dict(os.environ)
        # The server must not pick up the admin's AWS settings or proxies.
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(name, None)
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env.update(self.extra_env)
        with open(self.log_path, "ab") as logfh:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=logfh,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(timeout)
            if self.bucket is not None:
                self._create_bucket()
        except BaseException:
            self.stop()
            raise
        log.info("embedded local S3 (moto) on %s, pid %d, log %s", self.endpoint_url, self.process.pid, self.log_path)
        return self

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- last lines of {self.log_path} ---\n{tail}" if tail else ""

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            code = self.process.poll()
            if code is not None:
                raise ConfigError(
                    f"the embedded local S3 (moto server) exited with status {code} while "
                    f"starting; if moto is missing, install the 'local' extra "
                    f"(pip install 's3pvefs[local]'){self._log_tail()}"
                )
            try:
                # moto's own API: no S3 request, which moto would count against
                # INITIAL_NO_AUTH_ACTION_COUNT.
                with _opener.open(self.endpoint_url + "/moto-api/", timeout=2) as resp:
                    resp.read()
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer means the server is up
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the embedded local S3 (moto server) did not answer within {timeout:.0f} s "
                    f"on {self.endpoint_url}; is the 'local' extra installed "
                    f"(pip install 's3pvefs[local]')?{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _create_bucket(self) -> None:
        # moto's server accepts unsigned requests; a path-style PUT creates the bucket.
        req = urllib.request.Request(f"{self.endpoint_url}/{self.bucket}", method="PUT", data=b"")
        try:
            with _opener.open(req, timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # BucketAlreadyOwnedByYou
                raise ConfigError(
                    f"the embedded local S3 refused to create bucket {self.bucket}: "
                    f"HTTP {exc.code}{self._log_tail()}"
                ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(f"the embedded local S3 cannot be reached: {exc}") from None

    def stop(self) -> None:
        """Terminate and reap the server; remove the state directory if we created it."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif proc is not None:
            proc.wait()
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "LocalS3":
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- configuration -----------------------------------------------------------------------

    def configure(self, config: Config) -> Config:
        """A copy of `config` pointing at this server, with explicit dummy keys."""
        return dataclasses.replace(
            config,
            endpoint_url=self.endpoint_url,
            bucket=LOCAL_BUCKET,
            region="us-east-1",
            addressing_style="path",
            create_bucket=False,
            profile=None,
            access_key_id=LOCAL_KEY,
            secret_access_key=LOCAL_KEY,
            session_token=None,
            verify_tls=True,
            ca_bundle=None,
        )


DEMO_CACHE_PARENT = Path("/var/tmp")  # on disk, unlike a tmpfs /tmp: demo files can be large


def demo_cache_dir(parent: Path = DEMO_CACHE_PARENT) -> Path:
    """A fresh cache directory for a mount on the embedded S3 (its caller removes it at exit):
    its throw-away blocks and journal stay out of the production cache /var/cache/s3pvefs,
    where a later real mount would find them."""
    try:
        return Path(tempfile.mkdtemp(prefix="s3pvefs-embedded-cache-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"cannot create a cache directory for the embedded local S3 in "
                          f"{parent}: {exc.strerror or exc} (give one with --cache-dir)") from None


def start_local_s3(state_dir: Path | None = None, timeout: float = START_TIMEOUT) -> LocalS3:
    """Start a local S3 and return it (stop it with .stop() or use it in a `with` block)."""
    return LocalS3(state_dir).start(timeout)
