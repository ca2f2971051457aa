"""Run-folder I/O: atomic writes (temporary file, then rename), checkpoints and JSON lines.

A run folder holds ``config.json`` (the resolved config), ``run.json`` (ids, versions, parameter counts),
``metrics.jsonl``, ``checkpoint.pt`` (model, EMA, optimizer, step and RNG states) and ``train_summary.json``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable; the message says what to do."""


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch  # here, not at import: CLIs that only read JSON lines start without torch

    _atomic(Path(path), lambda f: torch.save(obj, f))


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train the run first (python -m dmz.train ... --out {path.parent})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, pickle garbage, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); delete it to restart the run "
            "from scratch, or restore a checkpoint_<step>.pt copy (train.keep_checkpoints) in its place") from e
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a DMZ checkpoint (no model/step entries); delete it or pick another run")
    return state


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one JSON line under an exclusive ``flock`` of the file, so appenders in other processes never
    interleave, however long the line. A line cut short by a killed writer is ended first (``read_jsonl`` skips it),
    so it cannot swallow the row appended after it."""
    data = (json.dumps(row, sort_keys=True, default=float) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)  # drops the lock


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed job: skip it
                continue
    return rows


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, cached per (real path, size, mtime)."""
    path = os.path.realpath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


#: this checkout's root (where ``results/`` lives)
REPO = Path(__file__).resolve().parent.parent


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository checkout it lies in (this one, or another checkout of it such as a
    ``git worktree`` that ran a grid: the nearest folder above it with a ``.git``), else as given. Checked-in rows
    and application scores must not carry the absolute paths of the machine that made them."""
    p = Path(path).resolve()
    for root in (REPO, *p.parents):
        if (root / ".git").exists() and p.is_relative_to(root):
            return str(p.relative_to(root))
    return str(path)
