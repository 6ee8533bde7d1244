"""Reading the published DuckDB file from a long-lived process, seeing every publish.

DuckDB keeps one database instance per path in a process: while any connection to the live
file is open, a new `duckdb.connect(path)` returns that same instance, so a process that once
opened the file keeps reading the snapshot it first saw, even after a publish renamed a new
file over it. What works, per publish mode (`DUCKDB_PUBLISH_MODE`, design.md section 4):

- `swap` (default) and `alternate`: the writer never touches the live file's bytes, it renames
  a new file (swap) or a symbolic link to the other of two files (alternate) over the live
  name. The reader keeps one read-only connection and, before each use, compares the identity
  of the file the live path leads to (device, inode, mtime, size) with the file it opened; when
  it changed, it waits for the cursors in use to finish, closes the connection (which drops
  DuckDB's cached instance) and opens the new file. Between requests a watcher thread does the
  same once a second for an idle connection: in alternate mode the file a reader still holds
  is the one the next publish changes, and DuckDB's lock would keep the writer out.
- `inplace`: the writer opens the live file itself and DuckDB refuses it while any reader holds
  it open. The reader opens and closes the file per use, under a shared lock on the writers'
  lock file taken without waiting: a writer waits at most one request (it polls its lock), and
  while a writer holds it the reader says "updating" instead of waiting.

A missing file is "no data yet"; a locked or unreadable one (a writer holding DuckDB's lock, a
half-copied file) is "updating". Neither is an error of the server.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from contracts.settings import PUBLISH_MODES
from contracts.warehouse import writer_lock_path

NO_DATA = "no_data"
UPDATING = "updating"
BEING_REPLACED = "Updating: the data is being replaced and cannot be read yet; try again shortly."
# How long a reader waits for the other readers of a replaced file before it looks again.
_DRAIN_POLL_S = 0.5
# How often an idle reader looks whether the file it holds is still the published one.
_RELEASE_POLL_S = 1.0


class WarehouseUnavailable(Exception):
    """The warehouse cannot be read right now; `state` is NO_DATA or UPDATING, `message` is for
    a person, `detail` is DuckDB's own words."""

    def __init__(self, state: str, message: str, detail: str = "") -> None:
        super().__init__(f"{message} ({detail})" if detail else message)
        self.state = state
        self.message = message
        self.detail = detail


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise WarehouseUnavailable(
                NO_DATA, "No data yet: the nightly pipeline has not published any."
            ) from None
        return cls(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class WarehouseReader:
    """Read-only cursors on the live DuckDB file, always of the latest published file."""

    def __init__(self, live: Path, publish_mode: str = PUBLISH_MODES[0]) -> None:
        if publish_mode not in PUBLISH_MODES:
            raise ValueError(
                f"DUCKDB_PUBLISH_MODE must be one of {', '.join(PUBLISH_MODES)}, "
                f"got {publish_mode!r}"
            )
        self.live = Path(live)
        self.hold_open = publish_mode != "inplace"
        self._lock = threading.Condition()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened: FileIdentity | None = None
        self._users = 0
        self._remembered: dict[str, Any] = {}
        self._stop_watching: threading.Event | None = None

    @property
    def lock_path(self) -> Path:
        """The writers' own lock file (pipeline.publishing.Warehouse.lock_path)."""
        return writer_lock_path(self.live)

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the newest published file; raises WarehouseUnavailable."""
        if not self.hold_open:
            with self._writers_kept_out():
                con = _open(self.live)
                try:
                    yield con
                finally:
                    con.close()
            return
        con = self._acquire()
        try:
            cursor = con.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        finally:
            self._release()

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()`, kept until the next publish (call it inside `cursor()`, whose file the
        answer is about: a held file cannot be replaced while a cursor is in use). In inplace
        mode nothing is kept: the file may change under the same name."""
        if not self.hold_open:
            return compute()
        with self._lock:
            if key in self._remembered:
                return self._remembered[key]
        value = compute()
        with self._lock:
            self._remembered[key] = value
        return value

    def close(self) -> None:
        with self._lock:
            if self._stop_watching is not None:
                self._stop_watching.set()
                self._stop_watching = None
            self._close()

    def _acquire(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            while True:
                identity = FileIdentity.of(self.live)
                if identity == self._opened and self._con is not None:
                    break
                if self._users == 0:
                    self._close()
                    # The identity is taken before opening: if the file is replaced in between,
                    # the next use sees a mismatch and reopens, never the other way round.
                    self._con = _open(self.live)
                    self._opened = identity
                    self._watch()
                    break
                self._lock.wait(_DRAIN_POLL_S)
            self._users += 1
            return self._con

    def _watch(self) -> None:
        """Start the watcher that lets go of a replaced file between requests (once)."""
        if self._stop_watching is None:
            self._stop_watching = threading.Event()
            threading.Thread(
                target=self._release_replaced,
                args=(self._stop_watching,),
                name="warehouse-reader-watcher",
                daemon=True,
            ).start()

    def _release_replaced(self, stop: threading.Event) -> None:
        while not stop.wait(_RELEASE_POLL_S):
            with self._lock:
                if self._con is None or self._users:
                    continue
                try:
                    current: FileIdentity | None = FileIdentity.of(self.live)
                except WarehouseUnavailable:
                    current = None
                if current != self._opened:
                    self._close()

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            self._lock.notify_all()

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
        self._con, self._opened = None, None
        self._remembered = {}

    @contextmanager
    def _writers_kept_out(self) -> Iterator[None]:
        try:
            lock_file = self.lock_path.open("rb")
        except FileNotFoundError:  # no writer has ever run here
            yield
            return
        with lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WarehouseUnavailable(
                    UPDATING, "Updating: the pipeline is publishing new data right now."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if not path.exists():
            raise WarehouseUnavailable(
                NO_DATA, "No data yet: the nightly pipeline has not published any."
            ) from None
        if "lock" in str(exc).lower():
            raise WarehouseUnavailable(
                UPDATING,
                "Updating: another program has the data locked; try again in a moment.",
                _first_line(exc),
            ) from None
        raise WarehouseUnavailable(UPDATING, BEING_REPLACED, _first_line(exc)) from None
    except duckdb.Error as exc:  # a file that is not (yet) a whole database
        raise WarehouseUnavailable(UPDATING, BEING_REPLACED, _first_line(exc)) from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200]
