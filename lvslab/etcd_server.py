"""Start a local etcd process (the Debian ``etcd`` binary) for the lab and the tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port(host: str = "127.0.0.1", *, besides: int | None = None) -> int:
    """A port nothing listens on now, other than ``besides`` (the kernel may hand out the
    port it just gave back: a member once got its client port as its peer port too)."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port != besides:
            return port


@dataclass
class TlsFiles:
    """Server side TLS: its certificate and key, and the CA that signs client certs."""

    cert: str
    key: str
    ca: str
    client_cert_auth: bool = True


class LocalEtcd:
    """One etcd member on loopback with a private data dir; restartable with its data.

    ``initial_cluster`` (``name=peer URL,...``, default: this member alone) and
    ``cluster_token`` make it one member of a cluster. They count only on its first start:
    once its data dir holds a member, etcd restarts it as that member of that cluster.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        tls: TlsFiles | None = None,
        name: str = "lvs",
        binary: str | None = None,
        log_path: str | Path | None = None,
        netns: str | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
    ) -> None:
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token
        self.data_dir = Path(data_dir)
        self.host = host
        self.client_port = client_port or free_port(host if netns is None else "127.0.0.1")
        self.peer_port = peer_port or free_port(host if netns is None else "127.0.0.1",
                                                besides=self.client_port)
        self.tls = tls
        self.name = name
        self.binary = binary or shutil.which("etcd") or "/usr/bin/etcd"
        self.log_path = Path(log_path) if log_path else self.data_dir.with_suffix(".log")
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        cmd = [
            self.binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        if self.cluster_token:
            cmd += ["--initial-cluster-token", self.cluster_token]
        if self.tls:
            cmd += ["--cert-file", self.tls.cert, "--key-file", self.tls.key]
            if self.tls.client_cert_auth:
                cmd += ["--client-cert-auth", "--trusted-ca-file", self.tls.ca]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart with the same data) and wait until it serves requests."""
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process and return at once (members of a new cluster start together:
        none of them is ready before a majority runs)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.environ.get("ETCD_UNSUPPORTED_ARCH", ""))
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=log, env=env, start_new_session=True
        )
        log.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.log_path}")
            if self.healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd not ready after {timeout}s; see {self.log_path}")

    def healthy(self) -> bool:
        """Whether /health answers (in a namespace: whether the port accepts connections)."""
        if self.netns:
            with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.client_port), timeout=0.2
            ):
                return True
            return False
        context = None
        if self.tls:
            # Its own certificate doubles as a client certificate (it must allow clientAuth).
            context = ssl.create_default_context(cafile=self.tls.ca)
            context.check_hostname = False
            context.load_cert_chain(self.tls.cert, self.tls.key)
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5,
                                        context=context) as resp:
                return b'"true"' in resp.read()
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def etcdctl(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run etcdctl (v3 API) against this member and return its stdout."""
        cmd = ["etcdctl", "--endpoints", self.url, *args]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        full_env = dict(os.environ, ETCDCTL_API="3", **(env or {}))
        return subprocess.run(cmd, check=True, capture_output=True, text=True,
                              env=full_env, timeout=30).stdout
