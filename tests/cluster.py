"""A real two-node Ray cluster on one machine: two network namespaces joined by a veth pair,
a head node and a worker node at their own addresses, token auth with one shared token, and a
separate --temp-dir per node. Everything is torn down by process session id and namespace
name, never by process name (`ray stop` would stop every Ray on the machine)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)
RAY = str(Path(sys.executable).with_name("ray"))


def can_make_namespaces() -> str | None:
    """None if this process can create network namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    probe = f"adp-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace ({made.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def session_pids(session_id: int) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,comm="], capture_output=True, text=True).stdout
    pids = []
    for line in ps.splitlines():
        pid, sid, *_ = line.split()
        if int(sid) == session_id:
            pids.append(int(pid))
    return pids


def kill_session(session_id: int) -> None:
    for pid in session_pids(session_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Node:
    """One `ray start --block` in its own namespace and process session."""

    def __init__(
        self,
        namespace: str,
        address: str,
        args: list[str],
        env: dict[str, str],
        hidden_dir: Path | None = None,
    ):
        self.namespace = namespace
        self.address = address
        self.temp_dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # unix sockets: short paths
        self.log = Path(self.temp_dir) / "node.log"
        hide: list[str] = []
        if hidden_dir is not None:
            # This node gets its own mount namespace in which hidden_dir is an empty tmpfs:
            # a folder the other node sees and this one does not (storage that is not shared).
            hide = [
                *["unshare", "--mount", "--propagation", "private", "sh", "-c"],
                f'mount -t tmpfs tmpfs "{hidden_dir}" && exec "$@"',
                "sh",
            ]
        command = [
            *["ip", "netns", "exec", namespace, *hide, RAY, "start", "--block"],
            f"--node-ip-address={address}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            *args,
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the node and every process it starts share this session
        )

    def pids(self, name: str) -> list[int]:
        """Pids in this node's session whose command name contains ``name``."""
        ps = subprocess.run(["ps", "-eo", "pid=,sid=,comm="], capture_output=True, text=True)
        found = []
        for line in ps.stdout.splitlines():
            pid, sid, comm = line.split(maxsplit=2)
            if int(sid) == self.proc.pid and name in comm:
                found.append(int(pid))
        return found

    def stop(self) -> None:
        kill_session(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class TwoNodeCluster:
    """Head at 10.213.N.1 in one namespace, worker at 10.213.N.2 in another, 1 CPU each."""

    def __init__(self, cpus_per_node: int = 1, hidden_dir: Path | None = None):
        tag = f"{os.getpid() % 100000}"
        subnet = 10 + os.getpid() % 240
        self.head_ns, self.worker_ns = f"adp-h{tag}", f"adp-w{tag}"
        self.head_ip, self.worker_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.veth = (f"adph{tag}", f"adpw{tag}")
        self.port, self.dashboard_port = 6379, 8265
        self.cpus = cpus_per_node
        self.hidden_dir = hidden_dir  # a folder the worker node cannot see
        self.token = secrets.token_hex(32)
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.head: Node | None = None
        self.worker: Node | None = None

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    # ------------------------------------------------------------------ network

    def _ip(self, *args: str, namespace: str | None = None) -> None:
        prefix = ["ip", "netns", "exec", namespace] if namespace else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    def make_network(self) -> None:
        subprocess.run(["ip", "netns", "add", self.head_ns], check=True)
        subprocess.run(["ip", "netns", "add", self.worker_ns], check=True)
        head_if, worker_if = self.veth
        self._ip("link", "add", head_if, "type", "veth", "peer", "name", worker_if)
        self._ip("link", "set", head_if, "netns", self.head_ns)
        self._ip("link", "set", worker_if, "netns", self.worker_ns)
        for ns, iface, ip in (
            (self.head_ns, head_if, self.head_ip),
            (self.worker_ns, worker_if, self.worker_ip),
        ):
            self._ip("addr", "add", f"{ip}/24", "dev", iface, namespace=ns)
            self._ip("link", "set", iface, "up", namespace=ns)
            self._ip("link", "set", "lo", "up", namespace=ns)
            # Ray finds a process's own address from the route to a public address (a UDP
            # connect, nothing is sent); without a default route a driver would pick
            # 127.0.0.1 and wait for a raylet there.
            self._ip("route", "add", "default", "dev", iface, namespace=ns)

    def delete_network(self) -> None:
        for ns in (self.head_ns, self.worker_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    # ------------------------------------------------------------------ nodes

    def start(self) -> TwoNodeCluster:
        self.make_network()
        self.head = Node(
            self.head_ns,
            self.head_ip,
            [
                "--head",
                f"--port={self.port}",
                f"--num-cpus={self.cpus}",
                "--include-dashboard=true",
                f"--dashboard-host={self.head_ip}",
                f"--dashboard-port={self.dashboard_port}",
            ],
            self.env,
        )
        self.wait_for(self.head_ns, self.head_ip, self.port)
        self.start_worker()
        self.wait_for_nodes(2)
        return self

    def start_worker(self) -> None:
        self.worker = Node(
            self.worker_ns,
            self.worker_ip,
            [f"--address={self.address}", f"--num-cpus={self.cpus}"],
            self.env,
            hidden_dir=self.hidden_dir,
        )

    def run_in(self, namespace: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *command],
            env=kwargs.pop("env", self.env),
            capture_output=True,
            text=True,
            **kwargs,
        )

    def popen_in(self, namespace: str, command: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            env=kwargs.pop("env", self.env),
            **kwargs,
        )

    def wait_for(self, namespace: str, host: str, port: int, timeout_s: float = 90) -> None:
        probe = (
            "import socket,sys,time\n"
            f"end=time.time()+{timeout_s}\n"
            "while time.time()<end:\n"
            f"    try: socket.create_connection(('{host}',{port}),1).close(); sys.exit(0)\n"
            "    except OSError: time.sleep(0.5)\n"
            "sys.exit(1)\n"
        )
        done = self.run_in(namespace, [sys.executable, "-c", probe], timeout=timeout_s + 30)
        if done.returncode != 0:
            raise RuntimeError(f"nothing listening on {host}:{port} in {namespace}")

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        script = (
            "import ray,time,sys\n"
            f"ray.init(address='{self.address}', logging_level='ERROR')\n"
            f"end=time.time()+{timeout_s}\n"
            "while time.time()<end:\n"
            f"    if sum(n['Alive'] for n in ray.nodes())>={count}: sys.exit(0)\n"
            "    time.sleep(1)\n"
            "sys.exit(1)\n"
        )
        done = self.run_in(self.head_ns, [sys.executable, "-c", script], timeout=timeout_s + 60)
        if done.returncode != 0:
            raise RuntimeError(f"fewer than {count} Ray nodes alive: {done.stderr[-2000:]}")

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None:
                node.stop()
        self.delete_network()
