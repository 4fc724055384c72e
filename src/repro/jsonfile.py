"""Strict JSON for every file we write: a NaN or an infinity becomes null, never the `NaN`/`Infinity` tokens that
Python's json module emits by default and that other JSON readers reject. Used by run.json, results/*.json,
manifests and locks (`repro finetune`, `repro collect`, `repro analyze`, `repro verify`, `repro eval --json`).
"""

from __future__ import annotations

import json
import math


def finite(value):
    """`value` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(document, *, indent: int | None = 2, sort_keys: bool = False) -> bytes:
    """The document as strict JSON text (UTF-8 bytes, one trailing newline when indented)."""
    text = json.dumps(finite(document), indent=indent, sort_keys=sort_keys, allow_nan=False)
    return (text + "\n" if indent is not None else text).encode()
