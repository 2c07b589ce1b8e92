"""The library API: ``generate`` one tensor, ``write`` a plan, ``load`` a file.

Validation (names, shapes, dtypes, the destination, free space) happens here, before JAX is
imported; JAX is imported only once there is something to generate.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__, formats
from .atomic import AtomicFile, check_destination
from .errors import UsageError
from .plan import DEFAULT_NAME, Plan, TensorSpec, make_tensor

# Bytes a format adds around the data, per tensor and per file (zip and npy headers, HDF5
# object headers); generous, since the check only guards against a disk that is nearly full.
_OVERHEAD = {"npz": (1024, 4096), "hdf5": (4096, 65536)}


@dataclass
class WriteResult:
    """What ``write`` and ``generate`` produced."""

    path: str
    format: str
    nbytes: int  # tensor data bytes
    seconds: float
    tensors: list = field(default_factory=list)  # engine.TensorResult, in file order


def file_metadata() -> dict[str, str]:
    return {"generator": "weightgen", "weightgen_version": __version__}


def expected_file_size(fmt: str, plan: Plan) -> int:
    """The output's size in bytes: exact for safetensors, a close upper bound otherwise."""
    entries = formats.entries_of(plan.tensors)
    if fmt == "safetensors":
        return formats.safetensors.file_size(entries, file_metadata())
    per_tensor, per_file = _OVERHEAD[fmt]
    return plan.nbytes + per_tensor * len(entries) + per_file


def write(
    plan: Plan,
    output: str | os.PathLike,
    *,
    format: str | None = None,
    force: bool = False,
    devices: str | None = None,
    chunk_size: int | None = None,
    compile_cache: bool = True,
    hashes: bool = True,
    on_bytes: Callable[[int], None] | None = None,
) -> WriteResult:
    """Generate every tensor of ``plan`` into one file (``"-"``: stdout), atomically.

    ``hashes=False`` skips each tensor's sha256 (``WriteResult.tensors[i].sha256`` is then
    None): about 0.7 s of CPU per GiB that a plain single-tensor run has no use for.
    """
    output = os.fspath(output)
    fmt = formats.format_for(output, format)
    if output == "-" and fmt not in formats.STREAMABLE:
        raise UsageError(
            f"{fmt} cannot be written to stdout (it needs a seekable file); "
            "use --format safetensors or npz, or give a file name"
        )
    entries = formats.entries_of(plan.tensors)
    if fmt == "safetensors":
        formats.safetensors.check_layout(entries)
    if output != "-":
        check_destination(output, force=force, nbytes=expected_file_size(fmt, plan))

    from .memory import tune_allocator

    tune_allocator()  # before JAX starts its threads
    from . import engine as engine_mod  # imports JAX: only now that the request is valid

    engine_mod.configure_jax(x64=plan.needs_x64, compile_cache=compile_cache)
    engine = engine_mod.Engine(engine_mod.select_devices(devices), chunk_size)

    started = time.perf_counter()
    module = formats.module(fmt)
    target = None if output == "-" else AtomicFile(output)
    sink = None
    try:
        if target is None:
            sink = module.Sink(sys.stdout.buffer, entries, file_metadata())
        elif fmt == "hdf5":
            target.file.close()  # h5py opens the path itself
            sink = module.Sink(target.path, entries, file_metadata())
        else:
            sink = module.Sink(target.file, entries, file_metadata())
        results = engine_mod.run(engine, plan, sink, on_bytes=on_bytes, hashes=hashes)
        sink.close()
        if target is not None:
            target.commit()
        else:
            sys.stdout.buffer.flush()
    except BaseException:
        if sink is not None:
            sink.abort()
        if target is not None:
            target.abort()
        raise
    return WriteResult(output, fmt, plan.nbytes, time.perf_counter() - started, results)


def generate(
    init: str,
    shape: Any,
    output: str | os.PathLike,
    *,
    params: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    sample_dtype: str | None = None,
    seed: int = 0,
    name: str = DEFAULT_NAME,
    **write_options: Any,
) -> WriteResult:
    """Write one tensor, e.g. ``generate("he-normal", (3, 3, 64, 128), "k.safetensors")``.

    The bytes equal ``jax.nn.initializers.<init>(**params)(jax.random.key(seed), shape, dtype)``
    (see the README's parity contract). ``write_options`` are those of ``write``.
    """
    spec = make_tensor(
        init, shape, params=params, dtype=dtype, sample_dtype=sample_dtype, seed=seed, name=name
    )
    return write(Plan.of([spec]), output, **write_options)


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a weightgen file (any format), with bfloat16/float8 restored."""
    reader = formats.open_reader(path)
    try:
        return {e.name: formats.read_tensor(reader, e) for e in reader.entries}
    finally:
        reader.close()


def half_precision_hint(spec: TensorSpec) -> str | None:
    """A one-line warning when JAX's coarse half-precision draws are in effect."""
    if spec.init.random and spec.sample_dtype.is_half and spec.sample_dtype == spec.dtype:
        import ml_dtypes

        levels = 2 ** ml_dtypes.finfo(spec.dtype.numpy).nmant
        return (
            f"hint: values are drawn in {spec.dtype.name}, as JAX does, from only {levels} "
            "distinct uniform levels; add --sample-dtype float32 to draw in float32 and round"
        )
    return None
