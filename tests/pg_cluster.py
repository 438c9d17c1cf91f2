"""A throw-away PostgreSQL cluster for the tests: ``initdb`` in a temporary folder, listening only on
a unix socket in that folder, tuned for speed (no fsync: nothing in it outlives the run), stopped and
removed at the end. Each test gets its own schema in it, so tests never see each other's rows.

Run alone it starts a cluster and prints its URL until interrupted (for trying things by hand, or
for ``bench/storage.py``; ``--durable`` keeps PostgreSQL's default fsync and commit settings, so a
benchmark measures what a real server does):

    .venv/bin/python tests/pg_cluster.py [--durable]

``RECAP_TEST_POSTGRES_URL`` points the tests at a server of your own instead (a database the role
may create schemas in). Found binaries: ``PG_BIN``, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``,
then ``PATH``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT = 5432  # only names the socket file, inside our own folder: no clash with another server
ROLE = "recap"
DATABASE = "recap"


def find_bin_dir() -> Path | None:
    candidates: list[str] = []
    if os.environ.get("PG_BIN"):
        candidates.append(os.environ["PG_BIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


class Cluster:
    def __init__(self, bin_dir: Path, root: Path | None = None, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.root = Path(root or tempfile.mkdtemp(prefix="recap-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "server.log"
        # The server refuses to run as root: a root test run starts it as the postgres user.
        self._user = _server_user()

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}@/{DATABASE}?host={self.socket_dir}&port={PORT}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        if self._user is not None:
            kwargs["user"] = self._user.pw_uid
            kwargs["group"] = self._user.pw_gid
            kwargs["extra_groups"] = []
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root, **kwargs)

    def start(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
            os.chown(self.socket_dir, self._user.pw_uid, self._user.pw_gid)
        done = self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", ROLE, "--auth=trust",
                         "--encoding=UTF8", "--locale=C", "--no-sync")
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        settings = ["-c listen_addresses=''", f"-c port={PORT}", f"-c unix_socket_directories={self.socket_dir}",
                    "-c max_connections=200", "-c shared_buffers=128MB"]
        if not self.durable:  # nothing in a test cluster outlives the run
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options = " ".join(settings)
        done = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                         "-o", options, "start")
        if done.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip() or done.stdout.strip()}\n{log}")
        deadline = time.monotonic() + 30
        while True:
            made = self._run(str(self.bin_dir / "createdb"), "-h", str(self.socket_dir), "-p", str(PORT), "-U", ROLE, DATABASE)
            if made.returncode == 0 or "already exists" in made.stderr:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {made.stderr.strip()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("Running as root, and neither a postgres nor a nobody user exists to run the server.")


if __name__ == "__main__":
    folder = find_bin_dir()
    if folder is None:
        raise SystemExit("No PostgreSQL binaries found (install the postgresql package, or set PG_BIN).")
    cluster = Cluster(folder, durable="--durable" in sys.argv[1:])
    cluster.start()
    print(cluster.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
