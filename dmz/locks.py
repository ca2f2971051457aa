"""Locks between processes on one file system (``fcntl.flock``): the per-cell lock of grid jobs, and the lock that
keeps appends to a JSON-lines file whole.

An flock belongs to the open file and the kernel drops it when the process holding it ends, however it ends
(SIGKILL included): a dead process can never keep a lock, the next one simply takes it. The lock file itself stays
(deleting it would race with a process that has just opened it). While held it records its holder (pid, host, start
time and what it is doing), so a process that finds the lock taken can say whom it waits for; a clean release empties
the record, so a record found by a new holder is the trace of a holder that died, and the new holder says that it
took over. Locks are per open file: two :class:`FileLock` objects on one path exclude each other even in one process.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Holder:
    """The record a lock holder leaves in the lock file."""

    pid: int | None = None
    host: str | None = None
    since: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, ValueError):
            return None
        if not isinstance(d, dict):
            return None
        return cls(d.pop("pid", None), d.pop("host", None), d.pop("since", None), d)

    def alive(self) -> bool | None:
        """Is the holder's process still running? None when it ran on another host (unknowable here)."""
        if self.host != socket.gethostname() or self.pid is None:
            return None
        try:
            os.kill(int(self.pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's live process
            return True
        return True

    def describe(self) -> str:
        what = self.info.get("what")
        since = time.strftime("%H:%M:%S", time.localtime(self.since)) if self.since else "?"
        return f"pid {self.pid} on {self.host}" + (f" ({what})" if what else "") + f" since {since}"


def read_holder(path: str | os.PathLike) -> Holder | None:
    """The record in a lock file (the current holder's, or a dead holder's trace); None when empty or absent."""
    try:
        return Holder.parse(Path(path).read_text())
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def held_by(path: str | os.PathLike) -> Holder | None:
    """Who holds the lock at ``path`` now (None when nobody does, or the file does not exist). Creates nothing.

    Probes with a shared non-blocking lock, released at once; a holder whose record cannot be read yet (it has just
    taken the lock) is reported as ``Holder()``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(path) or Holder()
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class FileLock:
    """An exclusive lock on ``path`` (created with its folder when missing).

    :param info: what the holder records besides pid, host and time (``what`` is shown to waiters).
    ``acquire`` returns the record a dead previous holder left (None after a clean release)."""

    def __init__(self, path: str | os.PathLike, **info: Any):
        self.path = Path(path)
        self.info = info
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> tuple[bool, Holder | None]:
        """``(True, trace of a dead previous holder or None)``, or ``(False, current holder)`` without waiting."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FileLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False, read_holder(self.path) or Holder()
        except BaseException:
            os.close(fd)
            raise
        previous = Holder.parse(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), **self.info},
                            default=str).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd
        return True, previous

    def acquire(self, *, wait: bool = True, timeout: float | None = None, poll_s: float = 0.25,
                on_wait: Callable[[Holder], None] | None = None, remind_s: float = 300.0) -> Holder | None:
        """Take the lock, waiting for the current holder when ``wait`` (``on_wait(holder)`` when the wait starts, and
        again every ``remind_s`` seconds or when the holder changes). Raises :class:`LockHeld` when ``wait`` is
        False, or ``timeout`` seconds pass, with the lock still held by another process. Returns the trace of a
        dead previous holder (None after a clean release)."""
        t0 = time.monotonic()
        told, told_at = None, 0.0
        while True:
            ok, who = self.try_acquire()
            if ok:
                return who
            now = time.monotonic()
            if not wait or (timeout is not None and now - t0 >= timeout):
                raise LockHeld(self.path, who)
            key = (who.pid, who.host, who.since)
            if on_wait is not None and (key != told or now - told_at >= remind_s):
                on_wait(who)
                told, told_at = key, now
            time.sleep(poll_s)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a clean release leaves no trace
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # the kernel drops the flock with the last descriptor


class LockHeld(RuntimeError):
    """The lock is held by another process (``holder``)."""

    def __init__(self, path: Path, holder: Holder):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {holder.describe()}")
