"""The library API: ``generate`` one tensor, ``write`` a plan, ``run_spec`` a spec or manifest,
``verify`` a file, ``load`` a file.

Validation (names, shapes, dtypes, destinations, free space) happens here, before JAX is
imported; JAX is imported only once there is something to generate.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__, formats
from .atomic import (
    AtomicDir,
    AtomicFile,
    check_destination,
    clean_stale,
    describe_os_error,
    sha256_file,
)
from .errors import HashMismatchError, UsageError, WeightgenError
from .plan import DEFAULT_NAME, Plan, TensorSpec, make_tensor

# Bytes a format adds around the data, per tensor and per file (zip and npy headers, HDF5
# object headers); generous, since the check only guards against a disk that is nearly full.
_OVERHEAD = {"npz": (1024, 4096), "hdf5": (4096, 65536)}


@dataclass
class WriteResult:
    """What ``write``, ``generate`` and ``run_spec`` produced."""

    path: str
    format: str  # "safetensors", "npz", "hdf5", or "safetensors-sharded"
    nbytes: int  # tensor data bytes
    seconds: float
    tensors: list = field(default_factory=list)  # engine.TensorResult, in file order
    files: list = field(default_factory=list)  # [{"name", "bytes", "sha256"}] of the output
    manifest: str | None = None  # where the manifest was written


def file_metadata() -> dict[str, str]:
    return {"generator": "weightgen", "weightgen_version": __version__}


def expected_file_size(fmt: str, plan: Plan) -> int:
    """The output's size in bytes: exact for safetensors, a close upper bound otherwise."""
    entries = formats.entries_of(plan.tensors)
    if fmt == "safetensors":
        return formats.safetensors.file_size(entries, file_metadata())
    per_tensor, per_file = _OVERHEAD[fmt]
    return plan.nbytes + per_tensor * len(entries) + per_file


class _HashingStream:
    """stdout, hashed as it goes (a pipe cannot be re-read for the manifest)."""

    def __init__(self, stream):
        self._stream, self.digest, self.size = stream, hashlib.sha256(), 0

    def write(self, data) -> int:
        self._stream.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._stream.flush()

    def tell(self) -> int:
        return self.size


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
    max_shard_size: int | None = None,
    manifest: str | os.PathLike | None = None,
    root_seed: int | None = None,
    own_seed: Iterable[str] | None = None,
    expected: Mapping[str, str] | None = None,
    expected_keys: Mapping[str, str] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> WriteResult:
    """Generate every tensor of ``plan`` into one file (``"-"``: stdout), atomically.

    ``max_shard_size`` (bytes) writes a Hugging Face sharded safetensors folder instead.
    ``manifest`` writes a manifest there (``root_seed``/``own_seed`` say how keys were made;
    by default every tensor counts as having its own seed). ``expected`` and
    ``expected_keys`` (from a manifest) are checked before and during generation; on a
    difference nothing is left at ``output``. ``hashes=False`` skips the per-tensor sha256
    when neither a manifest nor a caller needs it (about 0.7 s of CPU per GiB).
    """
    output = os.fspath(output)
    sharded = max_shard_size is not None
    fmt = "safetensors" if sharded and format is None else formats.format_for(output, format)
    if sharded and fmt != "safetensors":
        raise UsageError("--max-shard-size writes sharded safetensors; drop --format or use it")
    if output == "-" and (sharded or fmt not in formats.STREAMABLE):
        what = "a sharded checkpoint" if sharded else fmt
        raise UsageError(
            f"{what} cannot be written to stdout (it needs a seekable file or a folder); "
            "give an output path" + ("" if sharded else " or use --format safetensors or npz")
        )
    entries = formats.entries_of(plan.tensors)
    file_size = expected_file_size(fmt, plan)  # for safetensors, also checks the dtypes fit
    if output != "-":
        check_destination(output, force=force, nbytes=file_size, folder=sharded)
        clean_stale(os.path.dirname(os.path.abspath(output)))
    if manifest is not None:
        check_destination(manifest, force=force, nbytes=0)

    from .memory import tune_allocator

    tune_allocator()  # before JAX starts its threads
    from . import engine as engine_mod  # imports JAX: only now that the request is valid
    from . import prng

    engine_mod.configure_jax(x64=plan.needs_x64, compile_cache=compile_cache)
    engine = engine_mod.Engine(engine_mod.select_devices(devices), chunk_size)
    # Keys in hex, only when a manifest records them or checks them (a JAX call per tensor).
    keys = (
        {t.name: prng.key_hex(t.seed, t.fold_in) for t in plan.tensors}
        if manifest is not None or expected_keys
        else {}
    )
    for name, want in (expected_keys or {}).items():
        if keys.get(name) != want:
            raise HashMismatchError(
                f"tensor {name!r}: this JAX derives key {keys.get(name)}, the manifest "
                f"recorded {want}; its bytes would differ"
            )

    started = time.perf_counter()
    module = formats.module(fmt)
    target: AtomicFile | AtomicDir | None = None
    stream = None
    sink = None
    try:
        if sharded:
            from .formats import sharded as sharded_mod

            target = AtomicDir(output)
            sink = sharded_mod.Sink(target.path, entries, file_metadata(), max_shard_size)
        elif output == "-":
            # A pipe cannot be re-read, so a manifest's output hash is taken on the way out.
            stream = _HashingStream(sys.stdout.buffer) if manifest is not None else None
            sink = module.Sink(stream or sys.stdout.buffer, entries, file_metadata())
        elif fmt == "hdf5":
            target = AtomicFile(output)
            target.file.close()  # h5py opens the path itself
            sink = module.Sink(target.path, entries, file_metadata())
        else:
            target = AtomicFile(output)
            sink = module.Sink(target.file, entries, file_metadata())
        want_hashes = hashes or manifest is not None
        results = engine_mod.run(
            engine, plan, sink, on_bytes=on_bytes, hashes=want_hashes, expected=expected
        )
        sink.close()
        if output == "-":
            sys.stdout.buffer.flush()
        if isinstance(target, AtomicFile) and fmt == "safetensors":
            size = os.stat(target.path).st_size  # defence in depth: the layout is exact
            if size != file_size:
                raise WeightgenError(
                    f"internal error: wrote {size} bytes, expected {file_size}; nothing was written"
                )
        if target is not None:
            target.commit()
    except BaseException as exc:
        if sink is not None:
            sink.abort()
        if target is not None:
            target.abort()
        if isinstance(exc, OSError) and output != "-":
            raise WeightgenError(describe_os_error(exc, output)) from exc
        raise
    seconds = time.perf_counter() - started

    files: list[dict] = []
    if manifest is not None:
        files = _output_files(output, sharded, stream)
    result = WriteResult(
        output, "safetensors-sharded" if sharded else fmt, plan.nbytes, seconds, results, files
    )
    if manifest is not None:
        from . import manifest as manifest_mod

        document = manifest_mod.build(
            plan,
            root_seed=root_seed if root_seed is not None else 0,
            own_seed=own_seed if own_seed is not None else [t.name for t in plan.tensors],
            keys=keys,
            hashes={r.name: r.sha256 for r in results},
            output={
                "format": result.format,
                "bytes": sum(f["bytes"] for f in files),
                **({"sha256": files[0]["sha256"]} if len(files) == 1 and not sharded else {}),
                "files": files,
            },
        )
        _write_bytes_atomically(manifest, manifest_mod.dumps(document))
        result.manifest = os.fspath(manifest)
    return result


def _output_files(output: str, sharded: bool, stream) -> list[dict]:
    if stream is not None:
        return [{"name": "-", "bytes": stream.size, "sha256": stream.digest.hexdigest()}]
    if not sharded:
        return [
            {
                "name": os.path.basename(output),
                "bytes": os.path.getsize(output),
                "sha256": sha256_file(output),
            }
        ]
    names = sorted(os.listdir(output))
    return [
        {
            "name": n,
            "bytes": os.path.getsize(os.path.join(output, n)),
            "sha256": sha256_file(os.path.join(output, n)),
        }
        for n in names
    ]


def _write_bytes_atomically(path, data: bytes) -> None:
    target = AtomicFile(path)
    try:
        target.file.write(data)
        target.commit()
    except BaseException:
        target.abort()
        raise


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
    return write(Plan.of([spec]), output, root_seed=seed, own_seed=[name], **write_options)


def run_spec(source: str, output: str | os.PathLike, **write_options: Any) -> WriteResult:
    """Write every tensor of a spec or manifest (a path, or ``-`` for stdin).

    Given a manifest, the output is checked against it tensor by tensor: the first tensor
    whose bytes differ stops the run and nothing is left at ``output``.
    """
    from .specfile import load_spec

    return write_parsed(load_spec(source), output, **write_options)


def write_parsed(parsed, output: str | os.PathLike, **write_options: Any) -> WriteResult:
    """``run_spec`` for a spec already parsed (specfile.ParsedSpec)."""
    from . import manifest as manifest_mod

    try:
        return write(
            parsed.plan,
            output,
            root_seed=parsed.root_seed,
            own_seed=parsed.own_seed,
            expected=parsed.expected_sha256 or None,
            expected_keys=parsed.expected_key or None,
            **write_options,
        )
    except HashMismatchError as exc:
        if parsed.manifest is not None:
            import jax

            raise HashMismatchError(
                f"{exc}; the manifest was made with {manifest_mod.provenance(parsed.manifest)}, "
                f"this is weightgen {__version__}, jax {jax.__version__} on "
                f"{jax.default_backend()}; nothing was written"
            ) from None
        raise


def verify(manifest: str, target: str | os.PathLike) -> list:
    """Problems found comparing ``target`` (a file or sharded folder) with ``manifest``;
    an empty list when every tensor matches. Streams the file; never loads it whole."""
    from . import manifest as manifest_mod
    from .specfile import load_spec

    return manifest_mod.verify(load_spec(manifest), target)


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
