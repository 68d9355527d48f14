"""A real PostgreSQL server for the tests: started once per session from the binaries on PATH
or in /usr/lib/postgresql/*/bin, in a temporary directory, on a free loopback port (as an
unprivileged user when the tests run as root: PostgreSQL refuses root), stopped at the end.
Each test gets a fresh empty database of its own. Without the binaries the tests that need
one are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

BINARIES = ("initdb", "pg_ctl", "postgres")
READY_SECONDS = 30.0


def binaries() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or `None`."""
    on_path = shutil.which("initdb")
    candidates = [str(Path(on_path).parent)] if on_path else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)  # newest first
    for directory in candidates:
        if all((Path(directory) / name).is_file() for name in BINARIES):
            return Path(directory)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgreSQL:
    """One server: `url(db)` names a database on it, `create()` makes a fresh one, `stop()` and
    `start()` take the server away and bring it back (the same data, the same port)."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = _free_port()
        self._names = itertools.count()
        self.running = False
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            self._user = pwd.getpwnam("nobody")
            os.chown(root, self._user.pw_uid, self._user.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
        )

    def init(self) -> None:
        for directory in (self.data, self.sockets):
            directory.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(directory, self._user.pw_uid, self._user.pw_gid)
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"
        )
        assert done.returncode == 0, done.stderr
        self.start()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        done = self._run(
            "pg_ctl", "start", "-D", str(self.data), "-o", options, "-l", str(self.root / "log")
        )
        assert done.returncode == 0, done.stderr + self.log()
        deadline = time.monotonic() + READY_SECONDS
        while True:  # readiness poll, bounded
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                self.running = True
                return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "PostgreSQL did not start: " + self.log()
                time.sleep(0.05)

    def stop(self) -> None:
        done = self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
        assert done.returncode == 0, done.stderr
        self.running = False

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "log").read_text()
        return ""

    def create(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0'.encode())
        return self.url(name)


@contextlib.contextmanager
def server() -> Iterator[PostgreSQL]:
    """A running PostgreSQL for the session; skipped (failed under CI=true) without one."""
    bin_dir = binaries()
    if bin_dir is None:
        reason = "PostgreSQL binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="gateway-pg-") as root:
        postgres = PostgreSQL(bin_dir, Path(root))
        postgres.init()
        try:
            yield postgres
        finally:
            if postgres.running:
                postgres.stop()
