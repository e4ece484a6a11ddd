"""Real stores for the tests and the writer benchmark: a PostgreSQL cluster of its own on
loopback, and an `mlflow server` on it with MLflow's basic-auth app.

PostgreSQL refuses to run as root, so when the tests run as root the cluster runs as
``nobody``, in a folder of its own outside pytest's (root-only) temporary tree.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conftest import free_port, wait_for_http


def pg_bin() -> Path:
    """``$ADPRUNE_PG_BIN``, else the newest of Debian's ``/usr/lib/postgresql/N/bin``."""
    if os.environ.get("ADPRUNE_PG_BIN"):
        return Path(os.environ["ADPRUNE_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name or 0))
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = pg_bin()
PG_USER = "nobody"
ADMIN = ("admin", "adprune-admin-pw-1")


def have_postgres() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def as_pg_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *args] if os.geteuid() == 0 else args


@dataclass
class PostgresCluster:
    """``initdb`` into a temporary folder, ``pg_ctl start`` on 127.0.0.1 and a free port."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="adprune-pg-")))
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def uri(self, database: str) -> str:
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the driver here is psycopg2.
        return f"postgresql+psycopg2://{self._user()}@127.0.0.1:{self.port}/{database}"

    def _user(self) -> str:
        return PG_USER if os.geteuid() == 0 else os.environ.get("USER", "postgres")

    def start(self) -> PostgresCluster:
        if os.geteuid() == 0:
            shutil.chown(self.folder, PG_USER)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self._user()])
        options = f"-k {self.folder} -h 127.0.0.1 -p {self.port} -c fsync=on"
        self._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "pg.log")]
            + ["-o", options, "-w", "-t", "60", "start"]
        )
        return self

    def create_database(self, name: str) -> str:
        self._run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)]
            + ["-U", self._user(), name]
        )
        return self.uri(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, args: list[str]) -> None:
        proc = subprocess.run(as_pg_user(args), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


@dataclass
class TrackingServer:
    """A real `mlflow server` on 127.0.0.1: ``backend`` is its store's URI; with ``auth``,
    MLflow's basic-auth app, whose admin is :data:`ADMIN`."""

    folder: Path
    backend: str
    auth: bool = False
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TrackingServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend]
        args += ["--artifacts-destination", str(self.folder / "artifacts")]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if self.auth:
            args += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._auth_config())
            # The auth app's CSRF protection needs one key shared by the server's workers.
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
        env.pop("MLFLOW_TRACKING_USERNAME", None)
        env.pop("MLFLOW_TRACKING_PASSWORD", None)
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "server.log").open("a"),
            env=env,
            cwd=self.folder,
            start_new_session=True,
        )
        # A new PostgreSQL store runs all of MLflow's migrations first: minutes on a busy host.
        wait_for_http(f"{self.uri}/health", timeout_s=300)
        return self

    def _auth_config(self) -> Path:
        path = self.folder / "basic_auth.ini"
        path.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.folder / 'basic_auth.db'}\n"
            f"admin_username = {ADMIN[0]}\n"
            f"admin_password = {ADMIN[1]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # As the README's recipe: without it every request pays a password hash (~250 ms
            # of server CPU here), and the server, not the writer, sets the pace.
            "auth_cache_ttl_seconds = 60\n"
        )
        return path

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
