"""A benchmark's record: printed, and written atomically where ``--out`` asks (a killed run leaves the last one
whole)."""

from __future__ import annotations

from pathlib import Path

from dmz.runio import atomic_write_bytes


def emit(text: str, out: Path | None) -> int:
    """Print ``text``; write it to ``out`` when given; the script's exit code (0)."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(out), text.encode())
    return 0
