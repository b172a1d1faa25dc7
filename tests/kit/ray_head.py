"""A separate local Ray cluster for tests that lose it: ``ray start --head --block`` in a process
group of its own, on free ports of 127.0.0.1 and a temp dir of its own.

Stopping it kills exactly that process group (the GCS, the raylet, the agents) and the workers and
Serve replicas the raylet started (by id: they run in sessions of their own). ``ray stop`` would
stop every Ray cluster on the machine, the test session's own and anyone else's.
:meth:`RayHead.start` again brings it back on the same ports, so a client of ``RAY_ADDRESS`` finds
it where it was.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["RayHead", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _descendants(root: int) -> list[int]:
    """Every process under ``root`` (from /proc: parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class RayHead:
    """One head node (``num_cpus`` logical CPUs, no GPU); ``address`` is its GCS ``host:port``."""

    #: For the cluster and for every process that connects to it: no token authentication. (Ray
    #: 2.60 turns it on by itself: a ``~/.ray/auth_token`` on the machine switches ``ray start`` to
    #: it, and a process that started a local cluster has RAY_AUTH_MODE=token in its environment,
    #: which its subprocesses inherit; a driver whose mode differs from the cluster's hangs.)
    CLIENT_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def __init__(self, num_cpus: int = 4) -> None:
        self.num_cpus = num_cpus
        self.port = free_port()
        self.ports = {
            "--ray-client-server-port": free_port(),
            "--dashboard-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--metrics-export-port": free_port(),
            "--runtime-env-agent-port": free_port(),
        }
        # Short: Ray's unix sockets live under it (AF_UNIX paths are limited to ~107 bytes).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="vcray-", dir="/tmp"))
        self.log_path = self.temp_dir / "head.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> RayHead:
        ray = Path(sys.executable).parent / "ray"
        args = [str(ray), "start", "--head", "--block", "--disable-usage-stats", "--include-dashboard=false"]
        args += ["--node-ip-address=127.0.0.1", f"--port={self.port}", f"--num-cpus={self.num_cpus}", "--num-gpus=0"]
        args += [f"{flag}={port}" for flag, port in self.ports.items()]
        args += [f"--temp-dir={self.temp_dir}"]
        env = {**os.environ, **self.CLIENT_ENV}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, start_new_session=True)
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"ray start failed:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL every process of the cluster (as a crashed head machine); its port refuses at once."""
        if self.proc is None:
            return
        # The raylet's workers (Serve replicas, actors) start sessions of their own: kill them by id.
        workers = _descendants(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        self.proc = None
        deadline = time.monotonic() + 10
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
