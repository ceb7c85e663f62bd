"""A throwaway PostgreSQL cluster of the failure tests' own: `initdb` into a temp dir, served on a free port of
127.0.0.1 (and a Unix socket in the same dir), stopped and removed at the end. The shared server on 5432 is
never touched, so a test may stop and start this one under load.

As root, `initdb` and `pg_ctl` run as the `postgres` OS user (`runuser -u postgres --`: PostgreSQL refuses to
run as root); any other user runs them as itself. `cluster_or_skip()` says why when that is impossible.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_CTL_TIMEOUT = 30  # seconds `pg_ctl start|stop -w` may wait (passed as -t), bounded again by the subprocess
RUN_TIMEOUT = PG_CTL_TIMEOUT + 15


class ClusterUnavailable(Exception):
    """A throwaway cluster cannot be made here (the message says why): the tests that need one skip."""


def _binaries() -> Path:
    """The directory of `initdb` and `pg_ctl`: Debian's newest /usr/lib/postgresql/<ver>/bin, else the PATH."""
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0,
    )
    found = versions[-1] if versions else shutil.which("initdb")
    if not found:
        raise ClusterUnavailable("no initdb binary (neither /usr/lib/postgresql/*/bin/initdb nor initdb on PATH)")
    directory = Path(found).resolve().parent
    if not (directory / "pg_ctl").exists():
        raise ClusterUnavailable(f"initdb found in {directory} but no pg_ctl next to it")
    return directory


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix and the owner (uid, gid) the cluster's files need: as root, the `postgres` user."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterUnavailable("running as root and there is no `postgres` OS user to run initdb as") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterUnavailable("running as root and there is no `runuser` to run initdb as `postgres`")
    return [runuser, "-u", "postgres", "--"], user.pw_uid, user.pw_gid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """One initdb'd cluster; `start()`/`stop()` may be called again and again (the port stays the same)."""

    root: Path  # owned by the cluster's OS user: data/, the socket and the server log
    bin: Path
    prefix: list[str]
    port: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        query = f"?schema={schema}" if schema else ""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}{query}"

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )

    def start(self) -> None:
        """Start and wait until it accepts connections (`pg_ctl -w`, at most PG_CTL_TIMEOUT seconds)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        done = self._pg_ctl("start", "-w", "-t", str(PG_CTL_TIMEOUT), "-l", str(self.log_path), "-o", options)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {done.stderr}{done.stdout}\n{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m MODE` (immediate: every backend dies at once, crash recovery at the next start)."""
        done = self._pg_ctl("stop", "-w", "-t", str(PG_CTL_TIMEOUT), "-m", mode)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed ({done.returncode}): {done.stderr}{done.stdout}\n{self.log()}")

    def running(self) -> bool:
        return self._pg_ctl("status").returncode == 0

    def log(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no server log)"

    def destroy(self) -> None:
        """Stop (immediately; the postmaster is killed if pg_ctl cannot) and remove every file."""
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def make_cluster() -> Cluster:
    """initdb a new cluster into a fresh temp dir and start it on a free port; ClusterUnavailable when this machine
    cannot (no binaries, no user to run them as, initdb failing)."""
    binaries = _binaries()
    prefix, uid, gid = _run_as()
    # Not under pytest's tmp_path: that is private to root (0700), and the postgres user must reach its files.
    root = Path(tempfile.mkdtemp(prefix="eventbus-pg-"))
    if uid is not None and gid is not None:
        os.chown(root, uid, gid)
    cluster = Cluster(root=root, bin=binaries, prefix=prefix)
    try:
        command = [*prefix, str(binaries / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres"]
        try:
            done = subprocess.run(
                [*command, "--no-sync"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterUnavailable(f"initdb could not run: {exc}") from None
        if done.returncode != 0:
            raise ClusterUnavailable(f"initdb failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        for attempt in range(3):  # a free port may be taken between the probe and the start: try another
            cluster.port = free_port()
            try:
                cluster.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
    except BaseException:
        cluster.destroy()
        raise
    return cluster
