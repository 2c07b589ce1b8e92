"""The file formats: one module each, the same verbs (a streaming Sink, a Reader)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from ..errors import FileFormatError, UsageError
from . import safetensors as safetensors  # always needed: its layout sizes the output
from .base import TensorEntry

FORMATS = ("safetensors", "npz", "hdf5")
SUFFIXES = {".safetensors": "safetensors", ".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5"}


def module(fmt: str) -> ModuleType:
    """The format's module (imported on first use: h5py costs startup time)."""
    return importlib.import_module(f"{__name__}.{fmt}")


STREAMABLE = ("safetensors", "npz")  # can be written to a pipe (HDF5 needs to seek)

_MAGIC = {b"PK\x03\x04": "npz", b"PK\x05\x06": "npz", b"\x89HDF\r\n\x1a\n": "hdf5"}


def format_for(path: str, explicit: str | None) -> str:
    """The output format: ``explicit`` if given, else from the suffix."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise UsageError(f"--format {explicit}: choose one of {', '.join(FORMATS)}")
        return explicit
    if path == "-":
        raise UsageError("writing to stdout needs --format (safetensors or npz)")
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(
            f"cannot tell the format of {path!r} from its suffix; "
            "use .safetensors, .npz, .h5 or .hdf5, or pass --format"
        )
    return SUFFIXES[suffix]


def sniff(path: str | os.PathLike) -> str:
    """The format of an existing file, from its first bytes; "sharded" for a checkpoint
    folder (or its index file)."""
    from .sharded import is_checkpoint

    if is_checkpoint(path):
        return "sharded"
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except IsADirectoryError:
        raise FileFormatError(
            f"{path} is a folder without model.safetensors or model.safetensors.index.json, "
            "not a checkpoint"
        ) from None
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror}") from None
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    # A safetensors header is a JSON object: its first byte, after the length, is "{" (the
    # reference reader refuses any other). A text file or anything else is named as such.
    if len(head) == 9 and head[8:9] != b"{":
        raise FileFormatError(
            f"{path} is not a safetensors, npz or HDF5 file (it does not start as any of them)"
        )
    return "safetensors"


def open_reader(path: str | os.PathLike):
    return module(sniff(path)).Reader(path)


def read_tensor(reader, entry: TensorEntry) -> np.ndarray:
    """One whole tensor, in its logical dtype and shape."""
    flat = np.concatenate([*reader.iter_chunks(entry), np.empty(0, entry.dtype.numpy)])
    order = reader.order(entry) if hasattr(reader, "order") else "C"
    return flat.reshape(entry.shape, order=order)


def entries_of(tensors: Sequence) -> list[TensorEntry]:
    return [TensorEntry(t.name, t.shape, t.dtype) for t in tensors]
