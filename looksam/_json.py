"""Strict JSON from results: the one place NaN and infinities become null."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """A copy ``json.dumps(..., allow_nan=False)`` accepts: tuples → lists, NaN/±inf → null,
    mapping keys → str, objects JSON has no type for → their ``str()``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def write_json(payload: Any, path: Path) -> None:
    """``payload`` as indented strict JSON (see :func:`json_safe`), one newline at the end."""
    path.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")
