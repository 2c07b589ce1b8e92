"""JSON from untrusted sources (spec files, manifests, safetensors headers), parsed strictly:
duplicate keys, NaN and Infinity, and nesting deep enough to exhaust the stack are refused
with the caller's error type, never a traceback."""

from __future__ import annotations

import json
import sys
from typing import Any


def loads(text: str | bytes, *, error: type[Exception], what: str) -> Any:
    """``json.loads`` that raises ``error(f"{what}: ...")`` for anything but clean JSON."""

    def no_duplicates(pairs):
        obj = dict(pairs)
        if len(obj) != len(pairs):  # the rare case: find the culprit
            seen = set()
            for key, _ in pairs:
                if key in seen:
                    raise error(f"{what}: duplicate key {key!r}")
                seen.add(key)
        return obj

    def no_constants(name: str):
        raise error(f"{what}: {name} is not allowed (numbers must be finite)")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except RecursionError:
        raise error(f"{what}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's 4300-digit limit
        if isinstance(exc, error):
            raise
        raise error(f"{what}: not valid JSON ({exc})") from None


def read_bounded(source: str, limit: int, *, error: type[Exception], what: str) -> bytes:
    """The bytes of a path (or ``-``: stdin), refused past ``limit`` without reading more."""
    try:
        if source == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with open(source, "rb") as f:
                raw = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror}") from None
    if len(raw) > limit:
        raise error(f"{what} is larger than {limit >> 20} MiB")
    return raw
