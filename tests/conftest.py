"""Shared helpers. The oracle for every value is jax.nn.initializers itself."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

# Several CPU devices for the device-count tests; must be set before JAX initialises.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# Tests must not write into the user's cache folder.
os.environ.setdefault("WEIGHTGEN_COMPILE_CACHE", "0")


@contextlib.contextmanager
def x64(enabled: bool):
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


CLIENT_TIMEOUT = 600  # seconds: one client process builds and loads many small models
TRANSFORMERS_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_client(
    script: Path, jobs: list[dict], jobs_file: Path, python_path: str | None, **env: str
) -> dict:
    """A real client (transformers, a trainer) on ``jobs``, in a process and session of its
    own with only ``python_path`` on its path (and ``env``), killed past CLIENT_TIMEOUT: its
    JSON answer."""
    jobs_file.write_text(json.dumps(jobs))
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(env)
    if python_path:
        environ["PYTHONPATH"] = python_path
    proc = subprocess.run(
        [sys.executable, str(script), str(jobs_file)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def reference(spec) -> np.ndarray:
    """What JAX itself returns for ``spec`` (the parity contract's right-hand side)."""
    import jax

    builder = getattr(jax.nn.initializers, spec.init.jax_name)
    init = builder(**spec.params) if spec.init.jax_builder else builder
    key = jax.random.key(spec.seed)
    if spec.fold_in is not None:
        key = jax.random.fold_in(key, spec.fold_in)
    with x64(spec.needs_x64):
        out = init(key, spec.shape, spec.sample_dtype.numpy)
        if spec.sample_dtype != spec.dtype:
            out = out.astype(spec.dtype.numpy)
        return np.asarray(out)


def generated(spec, *, chunk_elems: int | None = None, devices=None) -> np.ndarray:
    """What weightgen's engine streams for ``spec``, reassembled."""
    from weightgen.engine import Engine

    engine = Engine(devices, chunk_elems)
    with x64(spec.needs_x64):
        chunks = list(engine.chunks(spec))
    flat = np.concatenate([*chunks, np.empty(0, spec.dtype.numpy)])
    return flat.reshape(spec.shape)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


class CliResult:
    def __init__(self, code: int, stdout: bytes, stderr: str):
        self.code, self.stdout_bytes, self.stderr = code, stdout, stderr

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")


@pytest.fixture
def run_cli():
    """Run ``weightgen.cli.main`` (the real exit path) under Click's CliRunner isolation."""
    from weightgen.cli import main

    def run(*args: str, input: bytes | None = None) -> CliResult:
        runner = CliRunner()
        with runner.isolation(input=input) as (out, err, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
            return CliResult(code, out.getvalue(), err.getvalue().decode())

    return run


# Manifest format 2, written out from the README with blake3 alone (no weightgen code): the
# tests hold weightgen's digests to this independent reading of the scheme.
README_BLOCK = 16 << 20


def readme_digest_of(data: bytes) -> bytes:
    import blake3

    blocks = [
        blake3.blake3(data[i : i + README_BLOCK]).digest()
        for i in range(0, len(data), README_BLOCK)
    ]
    return blake3.blake3(b"".join(blocks)).digest()


def readme_file_digest(path) -> str:
    """A safetensors file's digest: the file cut at every tensor's data boundaries."""
    import json

    import blake3

    with open(path, "rb") as f:
        raw = f.read()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    spans = sorted(
        (8 + size + v["data_offsets"][0], 8 + size + v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__"
    )
    pieces, position = [], 0
    for begin, end in spans:
        if begin > position:
            pieces.append(raw[position:begin])
        if end > begin:
            pieces.append(raw[begin:end])
        position = end
    if position < len(raw):
        pieces.append(raw[position:])
    return blake3.blake3(b"".join(readme_digest_of(p) for p in pieces)).hexdigest()


# For test_signals.py and test_hosts.py: a launcher that makes its process signal itself as
# one weightgen function begins (the function and the signal in SIGNAL_AT,
# "module:Class.function=number"), then runs weightgen.
SIGNAL_HOOK = """
import importlib, os
where, signum = os.environ["SIGNAL_AT"].rsplit("=", 1)
module, _, attribute = where.partition(":")
owner = importlib.import_module(module)
*parents, name = attribute.split(".")
for parent in parents:
    owner = getattr(owner, parent)
original = getattr(owner, name)
def signalled(*args, **kwargs):
    os.kill(os.getpid(), int(signum))
    return original(*args, **kwargs)
setattr(owner, name, signalled)
from weightgen.cli import main
main()
"""
