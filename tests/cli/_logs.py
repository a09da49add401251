"""What a log shows of a command's progress (imported as ``from _logs import ...``: pytest puts
this folder on ``sys.path``, as it does ``tests/optim`` for ``_models``)."""

from __future__ import annotations


def progress_lines(stderr: str, phase: str) -> list[str]:
    """The plain progress lines a log shows for ``phase`` (``phase: 1/2 · 0s spent · ETA 0s``)."""
    return [ln for ln in stderr.splitlines() if ln.startswith(phase) and " ETA " in ln]
