"""Throwaway Redis and PostgreSQL servers for the system tests, from Debian's packages, on loopback ports.

:class:`RedisServer` runs ``redis-server`` (Debian package ``redis-server``) without persistence.
:class:`PostgresServer` creates a cluster with ``initdb`` and runs ``postgres`` from
``/usr/lib/postgresql/<version>/bin`` (Debian package ``postgresql``), with a random password for its one
role. PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` system user (the
package creates it) and lives in a directory of its own under the temp folder, since pytest's folders are
private to root; otherwise it runs as the current user under the given root.

Each server is a :class:`~tests.system.deployment.Component` (own process group, output in a log), started
with :meth:`start` and ended with :meth:`stop`; :func:`missing` says what to install when a binary is absent.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.system.clients import DeploymentError
from tests.system.deployment import Component, free_port, tail, wait_for

POSTGRES_USER = "postgres"  # the system user Debian's postgresql package creates
STOP_TIMEOUT = 15.0


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``postgres``, else ``None``."""
    found = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "initdb").is_file() and (d / "postgres").is_file() and d.parent.name.isdigit()
    ]
    return max(found, key=lambda d: int(d.parent.name)) if found else None


def missing() -> str | None:
    """What to install for Redis and PostgreSQL, or ``None`` when both are there."""
    needed = []
    if shutil.which("redis-server") is None:
        needed.append("redis-server")
    if postgres_bin_dir() is None:
        needed.append("postgresql")
    elif os.geteuid() == 0 and not _user_exists(POSTGRES_USER):
        return (
            "PostgreSQL refuses to run as root and there is no 'postgres' system user to run it as: "
            "reinstall Debian's postgresql package (apt-get install --reinstall postgresql-common)"
        )
    if not needed:
        return None
    return f"needs Debian's {' and '.join(needed)}: apt-get install {' '.join(needed)}"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class _Server:
    """One server process, in its own process group, its output in ``log_dir/<name>.log``."""

    name = "server"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = 0
        self.component: Component | None = None

    def _spawn(self, argv: list[str], *, user: str | None = None, cwd: Path | None = None) -> Component:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{self.name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            )
        self.component = Component(self.name, popen, log_path)
        return self.component

    def check_alive(self) -> None:
        if self.component is not None and not self.component.alive():
            raise DeploymentError(
                f"{self.name} exited with {self.component.popen.returncode}:\n{tail(self.component.log_path)}"
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the server, SIGKILL to its process group if it is still there after a while."""
        component = self.component
        if component is None:
            return
        component.signal_group(sig)
        try:
            component.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            component.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.popen.wait(timeout=5)


class RedisServer(_Server):
    """``redis-server`` on a free loopback port, no persistence (no RDB snapshots, no AOF), no password."""

    name = "redis"

    def __init__(self, root: Path, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.dir = root / "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        binary = shutil.which("redis-server") or "redis-server"
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": str(self.dir),
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "protected-mode": "yes",
            "logfile": "",
        }
        argv = [binary]
        for option, value in options.items():
            argv += [f"--{option}", value]
        self._spawn(argv, cwd=self.dir)
        wait_for(self.ping, timeout=timeout, what="redis-server to answer PING", check=self.check_alive)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster: one role ``airflow`` with a random password, one database ``airflow``.

    Tuned for a test, not for durability: no fsync, no synchronous commit, no full page writes.
    """

    name = "postgres"
    role = "airflow"
    database = "airflow"

    def __init__(self, root: Path, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.root = root
        self.password = secrets.token_urlsafe(18)
        self.user: str | None = None
        self.base: Path | None = None  # holds data/ and the unix socket; removed by stop()
        self.bin_dir = postgres_bin_dir()

    def url(self, scheme: str = "postgresql+psycopg2") -> str:
        return f"{scheme}://{self.role}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _make_base(self) -> Path:
        if os.geteuid() != 0:
            base = self.root / "postgres"
            base.mkdir(mode=0o700, parents=True)
            return base
        # As root: a folder the postgres user owns, outside pytest's root-only temp folders.
        self.user = POSTGRES_USER
        base = Path(tempfile.mkdtemp(prefix="aoai-system-pg-"))
        account = pwd.getpwnam(POSTGRES_USER)
        os.chown(base, account.pw_uid, account.pw_gid)
        return base

    def start(self, timeout: float = 60.0) -> None:
        if self.bin_dir is None:
            raise DeploymentError(missing() or "no PostgreSQL binaries")
        self.base = self._make_base()
        data = self.base / "data"
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        pwfile.chmod(0o600)
        initdb = self._spawn(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                self.role,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            user=self.user,
            cwd=self.base,
        )
        try:
            code = initdb.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            initdb.signal_group(signal.SIGKILL)
            raise DeploymentError(f"initdb did not finish in {timeout:.0f}s") from None
        finally:
            pwfile.unlink(missing_ok=True)
        if code != 0:
            raise DeploymentError(f"initdb exited {code}:\n{tail(initdb.log_path)}")

        self.port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base),
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        argv = [str(self.bin_dir / "postgres"), "-D", str(data)]
        for option, value in settings.items():
            argv += ["-c", f"{option}={value}"]
        self._spawn(argv, user=self.user, cwd=self.base)
        deadline = time.monotonic() + timeout
        wait_for(
            self._accepting, timeout=timeout, what="postgres to accept connections", check=self.check_alive
        )
        self._create_database(timeout=deadline - time.monotonic())

    def _connect(self, database: str):  # -> psycopg2 connection
        import psycopg2  # the system extra; imported late so that collecting this module needs no driver

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.role,
            password=self.password,
            dbname=database,
            connect_timeout=5,
        )

    def _accepting(self) -> bool:
        import psycopg2

        try:
            self._connect("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def _create_database(self, timeout: float) -> None:
        connection = self._connect("postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {int(max(timeout, 1) * 1000)}")
                cursor.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            connection.close()

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Fast shutdown (SIGINT: running sessions are cut), then remove the cluster's folder."""
        super().stop(sig)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
