"""The library API: ``generate`` one tensor, ``write`` a plan, ``run_spec`` a spec or manifest,
``verify`` a file, ``load`` a file.

Validation (names, shapes, dtypes, destinations, free space) happens here, before JAX is
imported; JAX is imported only once there is something to generate.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import digest, formats, hosts, signals
from . import manifest as manifest_mod
from .atomic import AtomicFile, check_destination, describe_os_error
from .coordination import Cluster
from .errors import HashMismatchError, QRDriftError, UsageError, WeightgenError
from .manifest import FOLDER_MANIFEST, manifest_path_for
from .output import Target
from .plan import DEFAULT_NAME, Plan, TensorSpec, make_tensor
from .specfile import ParsedSpec
from .version import __version__


@dataclass
class TensorResult:
    name: str
    nbytes: int
    digest: str | None  # hex; None when no digest was asked for


@dataclass
class WriteResult:
    """What ``write``, ``generate`` and ``run_spec`` produced."""

    path: str
    format: str  # "safetensors", "npz", "hdf5", or "safetensors-sharded" (a folder)
    nbytes: int  # tensor data bytes (of this process's share, for processes other than 0)
    seconds: float
    tensors: list[TensorResult] = field(default_factory=list)  # in file order
    files: list = field(default_factory=list)  # [{"name", "bytes", "digest"}] of the output
    manifest: str | None = None  # where the manifest was written
    process: int = 0  # this process's id in a shared run
    processes: list = field(default_factory=list)  # shared runs, at process 0: each share
    notes: list = field(default_factory=list)  # lines for the user (accepted QR drift)


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
    hf_config: dict | None = None,
    recipe: dict | None = None,
    config_defaults: dict | None = None,
    manifest: str | os.PathLike | bool | None = None,
    file_sha256: bool = False,
    root_seed: int | None = None,
    own_seed: Iterable[str] | None = None,
    replay: ParsedSpec | None = None,
    cluster: Cluster | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> WriteResult:
    """Generate every tensor of ``plan`` into ``output``, atomically.

    ``output`` is a file (format from the suffix, or ``format``), ``"-"`` (stdout), or a
    checkpoint folder when ``max_shard_size`` (bytes) or ``hf_config`` (a Hugging Face
    config.json, written beside the weights) is given; ``recipe`` is the record of how a
    model's init rules were chosen, kept in the manifest, as are ``config_defaults`` (the
    config's size fields left to their class default). ``manifest`` writes a manifest: a
    path, or True for the default place (beside a file, inside a folder); ``root_seed`` and
    ``own_seed`` say how keys were made (by default every tensor has its own seed).
    ``file_sha256`` records each file's plain sha256 too (one more read of the output).
    ``replay`` (a parsed manifest) is checked before and during generation: keys first, then
    every block as it is written; on a difference nothing is left at ``output``.
    ``hashes=False`` skips the tensors' digests when neither a manifest nor the caller
    needs them. ``cluster``: this process is one of several that write ``output`` together
    (see hosts.py); every one of them makes the same call.
    """
    output = os.fspath(output)
    target = Target.of(
        plan, output, format=format, max_shard_size=max_shard_size, hf_config=hf_config
    )
    manifest_path, inside = _manifest_place(target, manifest)
    if cluster is not None:
        hosts.refuse_format(target.kind, target.format)
        if replay is not None and replay.version < 2:
            raise UsageError(
                "a format 1 manifest's sha256 cannot be checked by several processes; "
                "replay it in one process"
            )
    # A signal from here on ends the run as Ctrl-C does (signals.py); a library caller's
    # process still dies of SIGTERM/SIGHUP, after the cleanup.
    with signals.ending_cleanly(redeliver=True):
        team: hosts.Solo = hosts.Solo()
        if cluster is not None:
            progress = _totals(on_bytes) if on_bytes is not None else None
            team = hosts.Team(cluster, on_progress=progress)
            on_bytes = None  # the leader's bar shows the whole job's bytes (Watcher)
        try:
            result = _write(
                team,
                plan,
                _Output(team, target, manifest_path, inside),
                force=force,
                devices=devices,
                chunk_size=chunk_size,
                compile_cache=compile_cache,
                hashes=hashes,
                file_sha256=file_sha256,
                root_seed=root_seed,
                own_seed=own_seed,
                replay=replay,
                recipe=recipe,
                config_defaults=config_defaults,
                on_bytes=on_bytes,
                options={
                    "format": target.format,
                    "max_shard_size": max_shard_size,
                    "manifest": manifest_path,
                    "file_sha256": file_sha256,
                    "force": force,
                },
            )
        except BaseException as exc:
            with signals.held():
                team.fail(exc)
                if isinstance(team, hosts.Team):
                    team.close(ok=False)
            raise
        if isinstance(team, hosts.Team):
            team.close(ok=True)
    return result


def _totals(on_bytes: Callable[[int], None]) -> Callable[[int], None]:
    """A progress callback fed running totals, from one fed increments."""
    seen = [0]

    def update(total: int) -> None:
        if total > seen[0]:
            on_bytes(total - seen[0])
            seen[0] = total

    return update


def _write(
    team: hosts.Solo,
    plan: Plan,
    output: _Output,
    *,
    force: bool,
    devices: str | None,
    chunk_size: int | None,
    compile_cache: bool,
    hashes: bool,
    file_sha256: bool,
    root_seed: int | None,
    own_seed: Iterable[str] | None,
    replay: ParsedSpec | None,
    recipe: dict | None,
    on_bytes: Callable[[int], None] | None,
    options: dict,
    config_defaults: dict | None = None,
) -> WriteResult:
    """``write``'s steps, the same for one process (``hosts.Solo``) and for each process of
    a shared run (``hosts.Team``, whose leader is process 0): prepare (JAX, the agreement,
    the destination, the keys), then open, generate, assemble the digests, the manifest,
    commit; any failure or signal on the way aborts (``_Output.abort``)."""
    target, manifest_path = output.target, output.manifest_path
    need_digests = hashes or manifest_path is not None
    engine, keys = _prepare(
        team,
        plan,
        output,
        force=force,
        devices=devices,
        chunk_size=chunk_size,
        compile_cache=compile_cache,
        replay=replay,
        hashing=need_digests or replay is not None,  # as _taps decides
        options=options,
    )
    block_bytes = replay.block_bytes if replay is not None and replay.block_bytes else None
    block_bytes = block_bytes or digest.BLOCK_BYTES
    ranges = team.ranges(plan, block_bytes)
    work = _work(plan, ranges)
    streamed = target.path == "-"
    digests, taps = _taps(team, plan, work, block_bytes, replay, need_digests, streamed)

    started = time.perf_counter()
    try:
        signals.check()
        output.open()
        _generate(team, engine, plan, output.sink, ranges, taps, on_bytes)
        seconds = time.perf_counter() - started
        share = {
            "process": team.process_id,
            "bytes": sum(stop - start for _, _, start, stop in work),
            "seconds": round(seconds, 4),
        }
        gathered = team.gather("digests", _pack(share, digests.blocks() if digests else {}))
        if not team.leader:  # the leader commits; this process waits to hear that it did
            team.committed(b"")
            return WriteResult(
                target.path, target.format, share["bytes"], seconds, process=team.process_id
            )
        shares, all_blocks = _unpack(gathered)
        signals.check()
        target.finish()
        tensor_digests = {}
        if digests is not None:  # assembled from every process's blocks: no byte read back
            sizes = {t.name: t.nbytes for t in plan.tensors}
            tensor_digests = digest.assemble(sizes, all_blocks, block_bytes)
        files: list[dict] = []
        if manifest_path is not None or file_sha256:
            by_name = {n: d.digest for n, d in tensor_digests.items()}
            files = target.files(by_name, sha256=file_sha256)
        if manifest_path is not None:
            document = manifest_mod.build(
                plan,
                root_seed=root_seed if root_seed is not None else 0,
                own_seed=own_seed if own_seed is not None else [t.name for t in plan.tensors],
                keys=keys,
                digests=tensor_digests,
                output={
                    "format": target.format,
                    "bytes": sum(f.get("bytes") or 0 for f in files),
                    "files": files,
                },
                hf_config=target.hf_config,
                recipe=recipe,
                config_defaults=config_defaults,
            )
            output.add_manifest(manifest_mod.dumps(document))
        team.check()
        signals.check()
        output.commit()
        team.committed(b"ok")
    except BaseException as exc:
        replacement = output.abort(exc)
        if replacement is not None:
            raise replacement from exc
        raise
    signals.check()  # a signal that came during the renames (it says the output is whole)
    seconds = time.perf_counter() - started
    results = [
        TensorResult(
            t.name,
            t.nbytes,
            tensor_digests[t.name].digest.hex() if t.name in tensor_digests else None,
        )
        for t in plan.tensors
    ]
    return WriteResult(
        target.path,
        target.format,
        plan.nbytes,
        seconds,
        results,
        files,
        os.fspath(manifest_path) if manifest_path is not None else None,
        processes=shares if isinstance(team, hosts.Team) else [],
    )


def _prepare(
    team: hosts.Solo,
    plan: Plan,
    output: _Output,
    *,
    force: bool,
    devices: str | None,
    chunk_size: int | None,
    compile_cache: bool,
    replay: ParsedSpec | None,
    hashing: bool,
    options: dict,
):
    """Before anything is created: JAX, the processes' agreement, the destination's check,
    the engine (``hashing``: the writer will hash, see _taps); the keys in hex where a
    manifest records or checks them. (engine, keys)"""
    from .memory import tune_allocator

    tune_allocator()  # before JAX starts its threads
    from . import engine as engine_mod  # imports JAX: only now that the request is valid
    from . import prng

    target, manifest_path = output.target, output.manifest_path
    signals.check()  # between steps: a signal whose exception a callback dropped (signals.py)
    team.agree(lambda: hosts.agreement(plan, target.path, options, target.hf_config))
    team.decide(
        "check the destination", lambda: _check(target, manifest_path, output.inside, force)
    )
    # A second lane (engine._LANES) for a quantized weight's bands, and for chunks where
    # the writer hashes (a manifest, --json's digests, or a replay's check).
    quantized = any(t.quant is not None for t in plan.tensors)
    engine_mod.configure_jax(
        x64=plan.needs_x64, compile_cache=compile_cache, lanes=quantized or hashing
    )
    chosen = engine_mod.select_devices(devices)
    lanes = engine_mod.lanes(chosen)
    engine = engine_mod.Engine(chosen, chunk_size, lanes=lanes, alternate_chunks=hashing)
    signals.check()
    want_keys = team.leader and (
        manifest_path is not None or (replay is not None and replay.expected_key)
    )
    keys = {}
    if want_keys:  # all at once, in numpy
        words = prng.derive_words([t.seed for t in plan.tensors], [t.fold_in for t in plan.tensors])
        keys = {t.name: prng.words_hex(w) for t, w in zip(plan.tensors, words.tolist())}
    for name, want in (replay.expected_key if replay is not None and team.leader else {}).items():
        if keys.get(name) != want:
            raise HashMismatchError(
                f"tensor {name!r}: this JAX derives key {keys.get(name)}, the manifest "
                f"recorded {want}; its bytes would differ"
            )
    return engine, keys


def _work(plan: Plan, ranges) -> list[tuple[str, int, int, int]]:
    """(tensor, its bytes, first byte, end byte) of each range, for the digests."""
    specs = [plan.tensors[r.index] for r in ranges]
    return [
        (t.name, t.nbytes, r.start * t.dtype.itemsize, r.stop * t.dtype.itemsize)
        for t, r in zip(specs, ranges)
    ]


def _taps(
    team: hosts.Solo,
    plan: Plan,
    work,
    block_bytes: int,
    replay: ParsedSpec | None,
    wanted: bool,
    streamed: bool,
):
    """What sees every chunk written: (the block digests or None, every tap). A team counts
    its bytes; a replay checks each block (format 2) or each tensor's sha256 (format 1), the
    QR tensors' at the end (their bytes depend on the BLAS kernel: see qrdrift.py), except
    where the output is ``streamed`` (stdout), which cannot be taken back."""
    taps: list = [_Counter(team)] if isinstance(team, hosts.Team) else []
    digests = None
    qr = set() if streamed else {t.name for t in plan.tensors if not t.init.elementwise}
    if wanted or (replay is not None and replay.version >= 2):
        expected = replay.expected_blocks if replay is not None else None
        digests = digest.PieceDigests(work, expected=expected, block_bytes=block_bytes, deferred=qr)
        taps.append(digests)
    if replay is not None and replay.version == 1:
        taps.append(digest.Sha256Check(work, replay.expected_sha256, deferred=qr))
    return digests, taps


def _generate(team: hosts.Solo, engine, plan: Plan, sink, ranges, taps, on_bytes) -> None:
    """Every range of this process into ``sink``, written out (its fsync). A signal stops
    the engine between chunks (its threads joined) and is raised after; a team's failure
    elsewhere stops it too, and is raised here."""
    from . import engine as engine_mod

    stop = team.stop if team.stop is not None else threading.Event()
    signals.check()
    try:
        with team.working(), signals.stopping(stop):  # a team's watchers see the work move
            engine_mod.run(
                engine,
                plan,
                sink,
                ranges=ranges,
                taps=taps,
                on_bytes=on_bytes,
                stop=stop,
                clock=team if isinstance(team, hosts.Team) else None,
            )
            team.flushing()
            sink.close()
    except engine_mod.Stopped:
        team.check()  # why a team stopped
        raise


class _Output:
    """The temporary output and the manifest beside it, from creation to the commit: what
    a failure or a signal undoes (``abort``). Only the leader of a team creates, commits
    and removes; the others write into what it created."""

    def __init__(self, team: hosts.Solo, target: Target, manifest_path: str | None, inside: bool):
        self.team, self.target = team, target
        self.manifest_path, self.inside = manifest_path, inside
        self.sink = None  # what the engine feeds
        self.beside: AtomicFile | None = None  # a manifest outside the output
        self.committed = False  # the output is in place (its manifest may not be)

    def open(self) -> None:
        """The leader creates the temporary output; every process opens it."""
        team, target = self.team, self.target

        def create():
            with signals.held():  # no signal between creating the temporary and noting it
                self.sink = target.open(tag=_tag(team))
            return self.sink

        team.decide("create the temporary output", create)
        opened = target.temporary.name if target.temporary is not None else ""

        def follow(path: str) -> None:
            with signals.held():
                self.sink = target.join(path)

        team.join("open the temporary output", opened, follow)

    def add_manifest(self, data: bytes) -> None:
        """Inside the output folder, or beside the output, renamed into place just after it."""
        if self.inside:
            self.target.add_file(os.path.basename(self.manifest_path), data)
            return
        with signals.held():
            self.beside = AtomicFile(self.manifest_path)
        self.beside.file.write(data)

    def commit(self) -> None:
        """Everything on the disk, then the output and its manifest into place: a signal
        during the renames waits until both are done (``signals.check`` raises it)."""
        self.target.sync()
        if self.beside is not None:
            self.beside.sync()
        with signals.held(later=True):
            self.target.rename()
            self.committed = True
            if self.beside is not None:
                self.beside.rename()
            signals.written(self.target.path)

    def abort(self, exc: BaseException) -> BaseException | None:
        """Remove what was created (a second signal waits until that is done); the error to
        raise instead of ``exc``, if any."""
        with signals.held():
            if self.sink is not None:
                self.sink.abort()
            if self.beside is not None:
                self.beside.abort()
            if not self.committed:
                self.target.abort()
        if self.committed:  # the output is whole and in place; only its manifest is not
            reason = exc
            if isinstance(exc, OSError):
                reason = describe_os_error(exc, self.manifest_path)
            return WeightgenError(
                f"{self.target.path} was written, but its manifest {self.manifest_path} "
                f"was not: {reason}"
            )
        if isinstance(exc, OSError) and self.target.path != "-":
            return WeightgenError(describe_os_error(exc, self.target.path))
        return None


def _check(target: Target, manifest_path: str | None, inside: bool, force: bool) -> None:
    target.check(force=force)
    if manifest_path is not None and not inside:
        check_destination(manifest_path, force=force, nbytes=0)


def _tag(team: hosts.Solo) -> str:
    return f"{team.run}." if isinstance(team, hosts.Team) else ""


class _Counter:
    """The engine tap that tells a shared run's team what the writer wrote (its beats' bytes,
    and its progress clock)."""

    def __init__(self, team: hosts.Solo):
        self._team = team

    def update(self, number: int, data) -> None:
        self._team.wrote(number, len(data))

    def close(self) -> None:
        pass


def _pack(share: dict, blocks: Mapping[str, Mapping[int, bytes]]) -> bytes:
    """A process's figures and block digests, for the leader."""
    return json.dumps(
        {
            "share": share,
            "blocks": {n: {str(b): d.hex() for b, d in m.items()} for n, m in blocks.items()},
        }
    ).encode()


def _unpack(payloads: list[bytes]) -> tuple[list[dict], dict[str, dict[int, bytes]]]:
    shares, blocks = [], {}
    for payload in payloads:
        document = json.loads(payload)
        shares.append(document["share"])
        for name, found in document["blocks"].items():
            merged = blocks.setdefault(name, {})
            merged.update({int(b): bytes.fromhex(d) for b, d in found.items()})
    return shares, blocks


def _manifest_place(target: Target, manifest) -> tuple[str | None, bool]:
    """(path, inside the output folder) of the manifest to write, or (None, False)."""
    if manifest is None or manifest is False:
        return None, False
    if manifest is True:
        if target.kind == "stdout":
            raise UsageError(
                "a manifest needs a path when the output is stdout (--manifest PATH, or "
                "manifest=PATH in Python)"
            )
        if target.kind == "folder":
            return os.path.join(target.path, FOLDER_MANIFEST), True
        return manifest_path_for(target.path), False
    path = os.fspath(manifest)
    if target.kind == "folder" and Path(path).resolve().parent == Path(target.path).resolve():
        return path, True
    if target.kind != "stdout" and Path(path).resolve() == Path(target.path).resolve():
        raise UsageError(f"--manifest {path} is the output itself; choose another path")
    return path, False


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


def model_spec(
    config: str | os.PathLike | Mapping[str, Any],
    *,
    head: str | None = None,
    dtype: str | None = None,
    sample_dtype: str | None = None,
    seed: int = 0,
    init: str | None = None,
    init_std: float | None = None,
    rules: Iterable[str] | None = None,
    from_transformers: bool = False,
    mup_base_width: int | None = None,
    strict: bool = False,
    where: str | None = None,
    quantize: str | None = None,
) -> dict[str, Any]:
    """The spec of a whole Hugging Face model (``config`` a config.json, a folder holding
    one, a hub id ``"ORG/NAME[@REVISION]"``, or its contents): every tensor save_pretrained
    writes, and the completed config under ``hf_config``. The built-in families need no
    torch or transformers.

    Each tensor's init follows the recipe ``init`` (``"hf"``, the default: transformers'
    own rules; ``"megatron"``, ``"neox"``, ``"olmo2"``, ``"torchtitan"``) with the base
    std ``init_std`` (default: the recipe's), then ``rules`` (``"GLOB=INIT[,param=value]"``,
    later ones winning), e.g. ``rules=["*.o_proj.weight=zeros"]``. ``mup_base_width``: μP
    with this base width (the proxy model's hidden size), for a recipe with a μP form
    (``init="megatron"``: megatron-core's ``use_mup``, ``mup_base_hidden_size``).

    ``from_transformers=True`` takes the names, shapes, dtypes and init from the model
    transformers builds on torch's meta device, for any model type it knows (needs torch
    and transformers: ``pip install torch transformers``, or from a clone
    ``.venv/bin/pip install -e '.[transformers]'``); only ``init="hf"`` and
    ``rules`` apply then.

    A config key that is a near-miss of a field the shapes read (``num_layers`` for
    ``num_hidden_layers``) is refused; ``strict=True`` also refuses keys transformers does
    not know and size fields left to their class default. ``where`` names a config given as
    a mapping in messages (default: its path, or ``config.json``).

    ``quantize`` writes the checkpoint as it ships: ``"fp8-block"``, ``"mxfp4"``,
    ``"ct-fp8"``, ``"ct-w4a16"``, ``"ct-nvfp4"`` or ``"published"`` (the format the config's
    quantization_config names; see quant/)."""
    from . import hf
    from .plan import parse_seed

    if isinstance(config, Mapping):
        document, label = dict(config), where or "config.json"
    else:
        document, label = hf.read_config(config)
    return hf.spec_for(
        document,
        head=head,
        dtype=dtype,
        sample_dtype=sample_dtype,
        seed=parse_seed(seed),
        init=init,
        init_std=init_std,
        rules=list(rules) if rules is not None else None,
        from_transformers=from_transformers,
        mup_base_width=mup_base_width,
        strict=strict,
        where=label,
        quantize=quantize,
    )


def write_model(
    config: str | os.PathLike | Mapping[str, Any],
    output: str | os.PathLike,
    *,
    head: str | None = None,
    dtype: str | None = None,
    sample_dtype: str | None = None,
    seed: int = 0,
    init: str | None = None,
    init_std: float | None = None,
    rules: Iterable[str] | None = None,
    from_transformers: bool = False,
    mup_base_width: int | None = None,
    strict: bool = False,
    quantize: str | None = None,
    **write_options: Any,
) -> WriteResult:
    """Write a Hugging Face model folder (config.json, weights, manifest) for ``config``,
    e.g. ``write_model("config.json", "llama/", init="megatron")``; ``transformers`` loads
    it as is. ``init``, ``init_std``, ``rules``, ``from_transformers``, ``mup_base_width``,
    ``strict`` and ``quantize`` are those of ``model_spec``; ``write_options`` those of
    ``write``."""
    from .specfile import parse_spec

    spec = model_spec(
        config,
        head=head,
        dtype=dtype,
        sample_dtype=sample_dtype,
        seed=seed,
        init=init,
        init_std=init_std,
        rules=rules,
        from_transformers=from_transformers,
        mup_base_width=mup_base_width,
        strict=strict,
        quantize=quantize,
    )
    write_options.setdefault("manifest", True)
    return write_parsed(parse_spec(spec), output, **write_options)


def write_parsed(
    parsed,
    output: str | os.PathLike,
    *,
    accept_qr_drift: bool = False,
    config_check: bool = True,
    **write_options: Any,
) -> WriteResult:
    """``run_spec`` for a spec already parsed (specfile.ParsedSpec). A spec with an
    ``hf_config`` must hold the tensors that config gives (``check_config``), unless
    ``config_check=False``. A manifest's QR tensors
    (orthogonal, delta-orthogonal) that differ only because this host's BLAS kernel differs
    are refused with that explanation, or, with ``accept_qr_drift``, checked against the
    recorded values (qrdrift.py) and accepted, the new manifest recording this host's bytes."""
    if config_check:
        check_config(parsed)
    if accept_qr_drift and (os.fspath(output) == "-" or write_options.get("cluster")):
        raise UsageError(
            "--accept-qr-drift (accept_qr_drift=True) replays in one process into a file or "
            "folder: the drifted QR tensors are checked before anything is kept; drop -o - "
            "or the other processes"
        )
    try:
        return _write_parsed(parsed, output, **write_options)
    except QRDriftError as exc:
        if not accept_qr_drift or parsed.manifest is None:
            from . import qrdrift

            raise QRDriftError(qrdrift.explain(exc, parsed.manifest), exc.tensors) from None
        drifted = exc.tensors
    from . import qrdrift

    checked = qrdrift.check(parsed, drifted, write=write, load=load)
    relaxed = dataclasses.replace(
        parsed,
        expected_sha256={k: v for k, v in parsed.expected_sha256.items() if k not in drifted},
        expected_digest={k: v for k, v in parsed.expected_digest.items() if k not in drifted},
        expected_blocks={k: v for k, v in parsed.expected_blocks.items() if k not in drifted},
    )
    result = _write_parsed(relaxed, output, **write_options)
    result.notes.extend(str(c) for c in checked)
    return result


def _write_parsed(parsed, output: str | os.PathLike, **write_options: Any) -> WriteResult:
    hf_config = folder_config(parsed)
    try:
        return write(
            parsed.plan,
            output,
            root_seed=parsed.root_seed,
            own_seed=parsed.own_seed,
            hf_config=hf_config,
            recipe=parsed.recipe,
            replay=parsed if parsed.manifest is not None else None,
            config_defaults=parsed.config_defaults,
            **write_options,
        )
    except HashMismatchError as exc:
        if parsed.manifest is not None and not isinstance(exc, QRDriftError):
            import jax

            raise HashMismatchError(
                f"{exc}; the manifest was made with {manifest_mod.provenance(parsed.manifest)}, "
                f"this is weightgen {__version__}, jax {jax.__version__} on "
                f"{jax.default_backend()}; nothing was written"
            ) from None
        raise


def folder_config(parsed) -> dict | None:
    """The config.json a spec's folder gets: its ``hf_config``, naming the weights' dtype
    when they share one."""
    hf_config = parsed.hf_config
    dtypes = {t.dtype.name for t in parsed.plan.tensors}
    if hf_config is not None and len(dtypes) == 1:
        from . import hf

        (only,) = dtypes
        if only in hf.MODEL_DTYPES:  # config.json names the weights' dtype
            hf_config = hf.config_with_dtype(hf_config, only)
    return hf_config


def check_config(parsed, where: str | None = None) -> None:
    """Refuse a spec or manifest whose tensors (names, shapes, dtypes) are not what its
    ``hf_config`` gives, naming the first difference (built-in families); ``where`` names
    the spec in the message."""
    hf_config = folder_config(parsed)
    if hf_config is not None:
        from . import hf

        where = where or ("the manifest" if parsed.manifest else "the spec")
        hf.check_tensors(hf_config, parsed.plan.tensors, where)


def check_output(
    parsed,
    output: str | os.PathLike,
    *,
    format: str | None = None,
    force: bool = False,
    max_shard_size: int | None = None,
    manifest: str | os.PathLike | bool | None = None,
) -> None:
    """The checks ``write`` makes of a destination before any work (a file or a folder, the
    format, an existing output without ``force``, a missing parent folder, the free space),
    alone: for a caller that says what it will write only once they pass. ``write`` makes
    them again."""
    target = Target.of(
        parsed.plan,
        os.fspath(output),
        format=format,
        max_shard_size=max_shard_size,
        hf_config=parsed.hf_config,
    )
    manifest_path, inside = _manifest_place(target, manifest)
    _check(target, manifest_path, inside, force)


def verify(
    manifest: str | os.PathLike | None,
    target: str | os.PathLike,
    *,
    jobs: int | None = None,
    config_check: bool = True,
) -> list:
    """Problems found comparing ``target`` (a file, or a checkpoint folder or its index) with
    ``manifest``; an empty list when everything matches. ``manifest=None`` takes the one a
    folder carries (``weightgen.manifest.json``) or the one beside a file. Reads each file
    once, on ``jobs`` threads; never loads it whole. A model folder's config.json is
    compared with the manifest's ``hf_config`` field by field, and (unless
    ``config_check=False``) must give the manifest's tensors."""
    from .specfile import load_spec
    from .verifier import verify as verify_parsed

    parsed = load_spec(os.fspath(find_manifest(manifest, target)))
    return verify_parsed(parsed, target, jobs=jobs, config_check=config_check)


def find_manifest(manifest: str | os.PathLike | None, target: str | os.PathLike) -> str:
    """The manifest to check ``target`` against: the one given, else the folder's own, else
    the one beside the file."""
    if manifest is not None:
        return os.fspath(manifest)
    if not os.path.lexists(target):
        raise WeightgenError(f"{os.fspath(target)} does not exist")
    where, found = manifest_mod.locate(target)
    if found is not None:
        return found
    if os.path.basename(where) == FOLDER_MANIFEST:
        raise UsageError(f"{target} holds no {FOLDER_MANIFEST}; give the manifest's path too")
    raise UsageError(f"no manifest found beside {target} ({where}); give the manifest's path too")


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
