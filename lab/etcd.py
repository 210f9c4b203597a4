"""Running real etcd members: for the lab and for test fixtures.

Owns: etcd processes this program started (tracked by PID, killed only by
PID), their data directories and their ports. Optionally inside a network
namespace (`netns`), optionally with TLS and client-certificate auth.

Fast-restart flags (`--heartbeat-interval 10 --election-timeout 100`) keep a
restart on an existing data dir at ~0.2 s instead of ~1.4 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.procs import spawn_recorded

ETCD_BINARY = "etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TLSFiles:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


@dataclass
class EtcdMember:
    """One etcd member. `cluster` lists name=peer-url for every member."""

    name: str
    data_dir: Path
    client_host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    netns: str | None = None
    tls: TLSFiles | None = None
    cluster: str = ""
    log_path: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    # The lab runs several independent clusters on one machine; a per-cluster
    # token keeps members of one from ever joining another.
    cluster_token: str = ""
    # None means the module-level ETCD_BINARY (tests may patch either).
    binary: str | None = None

    def __post_init__(self) -> None:
        self.client_port = self.client_port or free_port()
        self.peer_port = self.peer_port or free_port()

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.client_host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.client_host}:{self.peer_port}"

    def argv(self) -> list[str]:
        argv = [
            self.binary or ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "10",
            "--election-timeout", "100",
            "--logger", "zap",
            "--log-level", "error",
        ]
        if self.cluster_token:
            argv += ["--initial-cluster-token", self.cluster_token]
        if self.tls:
            argv += [
                "--cert-file", self.tls.server_cert,
                "--key-file", self.tls.server_key,
                "--trusted-ca-file", self.tls.ca,
                "--client-cert-auth",
            ]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def start(self, record: Callable[[int], None] | None = None) -> None:
        """Start the member. With `record`, etcd runs only after record(pid) returned
        (lab.procs.spawn_recorded), so a crash of the caller never leaks an
        unrecorded member."""
        # 0700: etcd warns about (and newer versions refuse) a group-readable data dir.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = open(self.log_path or self.data_dir.with_suffix(".log"), "ab")  # noqa: SIM115
        # stdin from /dev/null: a member started by a short-lived CLI (`tortie-lab up`)
        # outlives it and must not hold on to the caller's terminal.
        kwargs: dict[str, Any] = dict(stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if record is None:
                self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, **kwargs)
            else:
                self.proc = spawn_recorded(self.argv(), record, **kwargs)
        finally:
            log.close()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd {self.name} exited with {self.proc.returncode}; see {self.log_file}"
                )
            if self.healthy():
                return
            time.sleep(0.02)
        raise TimeoutError(f"etcd {self.name} not healthy after {timeout}s; see {self.log_file}")

    @property
    def log_file(self) -> Path:
        return self.log_path or self.data_dir.with_suffix(".log")

    def healthy(self, probe_timeout: float = 1.0) -> bool:
        """One /health probe. etcd answers it only once a leader is known, so
        during an election the probe waits up to `probe_timeout`."""
        max_time = f"{probe_timeout:g}"
        if self.tls:
            argv = [
                "curl", "-sf", "--max-time", max_time, "--cacert", self.tls.ca,
                "--cert", self.tls.client_cert, "--key", self.tls.client_key,
                f"{self.client_url}/health",
            ]
        elif self.netns:
            argv = ["curl", "-sf", "--max-time", max_time, f"{self.client_url}/health"]
        else:
            try:
                with urllib.request.urlopen(f"{self.client_url}/health",
                                            timeout=probe_timeout) as r:
                    return b'"health":"true"' in r.read()
            except OSError:
                return False
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        res = subprocess.run(argv, capture_output=True, timeout=probe_timeout + 5)
        return res.returncode == 0 and b'"health":"true"' in res.stdout

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the process we started (by PID, and only it)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_healthy()


def start_single(
    base_dir: Path, name: str = "default", tls: TLSFiles | None = None, netns: str | None = None,
    host: str = "127.0.0.1",
) -> EtcdMember:
    member = EtcdMember(name=name, data_dir=base_dir / f"{name}.etcd", tls=tls, netns=netns,
                        client_host=host, client_port=2379 if netns else 0,
                        peer_port=2380 if netns else 0)
    member.start()
    try:
        member.wait_healthy()
    except Exception:
        member.stop(signal.SIGKILL)
        raise
    return member


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1",)) -> TLSFiles:
    """A throwaway CA plus server and client certificates, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    if not shutil.which("openssl"):
        raise RuntimeError("openssl is needed to make TLS test certificates")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tortie-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    san = ",".join(f"IP:{h}" for h in hosts) + ",DNS:localhost"
    for who, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (directory / f"{who}.ext").write_text(
            f"subjectAltName={san}\nextendedKeyUsage={usage}\n"
        )
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=tortie-{who}",
            "-keyout", f"{who}.key", "-out", f"{who}.csr")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}.crt")
    d = str(directory)
    return TLSFiles(
        ca=f"{d}/ca.crt", server_cert=f"{d}/server.crt", server_key=f"{d}/server.key",
        client_cert=f"{d}/client.crt", client_key=f"{d}/client.key",
    )
