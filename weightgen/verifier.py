"""``verify``: read every file of an output once and compare it with its manifest.

Each file is read in file order, one block of one piece (a tensor's data, or the bytes
between) at a time; the blocks are hashed by a pool of threads (BLAKE3 and file reads release
the GIL), while hashes that must see every byte in order (sha256: manifest format 1, or a
file's plain sha256 when recorded) run on their own threads beside it. Memory stays at a few
blocks per thread whatever the size.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import digest, formats, layout
from .errors import FileFormatError, WeightgenError
from .formats.base import TensorEntry
from .specfile import ParsedSpec

FOLDER_FORMAT = "safetensors-sharded"


@dataclass
class Problem:
    tensor: str
    kind: str  # "differs", "missing", "extra", "shape", "dtype", "file"
    detail: str

    def __str__(self) -> str:
        return f"{self.tensor}: {self.kind}: {self.detail}" if self.tensor else self.detail


def default_jobs() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def verify(
    parsed: ParsedSpec,
    target: str | os.PathLike,
    *,
    jobs: int | None = None,
    config_check: bool = True,
) -> list:
    """Problems found comparing ``target`` (a file, or a checkpoint folder or its index)
    with the manifest ``parsed``; an empty list when everything matches. A model folder's
    config.json is compared with the manifest's ``hf_config`` and, with ``config_check``,
    must give the manifest's tensors."""
    if parsed.manifest is None:
        raise WeightgenError("verify needs a manifest (a spec has no hashes to check)")
    try:
        reader = formats.open_reader(target)
    except (WeightgenError, OSError) as exc:
        return [Problem("", "file", f"{target}: {exc}")]
    try:
        present = {e.name: e for e in reader.entries}
    finally:
        reader.close()
    problems, comparable = _compare_layout(parsed, present)
    problems += _config_problems(parsed, target, config_check)
    scanner = _Scanner(jobs or default_jobs(), parsed.block_bytes or digest.BLOCK_BYTES)
    try:
        files, file_problems = _recorded_files(parsed, target)
        problems += file_problems
        hashed: dict[str, object] = {}  # tensor -> its block futures (format 2) or sha256 (1)
        results = []
        for recorded, found in files:
            mine: dict[str, object] = {}
            try:
                results.append((recorded, found, scanner.scan(parsed, found, comparable, mine)))
            except (FileFormatError, OSError) as exc:  # this file's tensors: unreadable
                problems.append(Problem("", "file", f"{found.name}: {exc}"))
                hashed.update(dict.fromkeys(mine))
                continue
            hashed.update(mine)
        rest = [n for n in comparable if n not in hashed]
        if rest:
            problems += _scan_by_reader(parsed, target, [comparable[n] for n in rest], hashed)
        tensor_problems = _compare_tensors(parsed, comparable, hashed)
        problems += tensor_problems
        differing = {p.tensor for p in tensor_problems}
        for recorded, found, scan in results:
            problems += _compare_file(parsed, recorded, found, scan, differing)
    finally:
        scanner.close()
    return problems + _qr_only(parsed, problems)


def _qr_only(parsed: ParsedSpec, problems: list[Problem]) -> list[Problem]:
    """One more line when the only tensors that differ are QR-based (orthogonal,
    delta-orthogonal) and the manifest's BLAS kernel is not this host's: their bytes depend
    on the kernel that computed them."""
    differing = [p.tensor for p in problems if p.kind == "differs"]
    qr = {t.name for t in parsed.plan.tensors if not t.init.elementwise}
    if not differing or any(p.tensor not in qr for p in problems if p.tensor):
        return []
    from . import blas

    recorded = (parsed.manifest.get("environment") or {}).get("blas")
    if blas.same_kernel(recorded, blas.info()):
        return []  # the same kernel gives the same bytes: the BLAS is not the cause
    return [
        Problem(
            "",
            "blas",
            f"only QR tensors differ ({', '.join(differing)}): their bytes depend on the BLAS "
            f"kernel that computed them (the manifest's: {blas.describe(recorded)}; this "
            f"host's: {blas.describe(blas.info())}); `weightgen run MANIFEST -o OUT "
            "--accept-qr-drift` checks them against the recorded values within rounding",
        )
    ]


def _compare_layout(parsed: ParsedSpec, present: Mapping[str, TensorEntry]):
    """Missing, extra, reshaped and retyped tensors; the rest can be compared by content."""
    expected = {t.name: t for t in parsed.plan.tensors}
    problems = [Problem(n, "missing", "not in the file") for n in expected if n not in present]
    problems += [Problem(n, "extra", "not in the manifest") for n in present if n not in expected]
    comparable = {}
    for name, spec in expected.items():
        entry = present.get(name)
        if entry is None:
            continue
        if tuple(entry.shape) != spec.shape:
            detail = f"{list(entry.shape)} in the file, {list(spec.shape)} expected"
            problems.append(Problem(name, "shape", detail))
        elif entry.dtype.name != spec.dtype.name:
            detail = f"{entry.dtype.name} in the file, {spec.dtype.name} expected"
            problems.append(Problem(name, "dtype", detail))
        else:
            comparable[name] = entry
    return problems, comparable


def _config_problems(parsed: ParsedSpec, target, config_check: bool) -> list[Problem]:
    """A model folder's config.json against the manifest's hf_config, field by field; then
    (``config_check``) whether the config gives the manifest's tensors."""
    from . import hf
    from .errors import UsageError
    from .formats.sharded import find_index
    from .output import CONFIG_NAME

    if parsed.hf_config is None:
        return []
    index = find_index(target)
    folder = index.parent if index is not None else Path(target)
    path = folder / CONFIG_NAME
    if not path.is_file():
        return []  # reported with the files, when the manifest records one
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return [Problem("", "config", f"{CONFIG_NAME}: not readable as JSON ({exc})")]
    if not isinstance(config, dict):
        return [Problem("", "config", f"{CONFIG_NAME}: not a JSON object")]
    want = parsed.hf_config
    changed = [k for k in {**want, **config} if config.get(k, _ABSENT) != want.get(k, _ABSENT)]
    problems = [
        Problem(
            "",
            "config",
            f"{CONFIG_NAME}: {key} is {_value(config, key)}; the manifest's hf_config has "
            f"{_value(want, key)}",
        )
        for key in changed[:5]
    ]
    if len(changed) > 5:
        problems.append(
            Problem("", "config", f"{CONFIG_NAME}: {len(changed) - 5} more fields differ")
        )
    if config_check:
        try:
            hf.check_tensors(config, parsed.plan.tensors, "the manifest", CONFIG_NAME, fix="")
        except UsageError as exc:
            problems.append(Problem("", "config", str(exc)))
    return problems


_ABSENT = object()


def _value(config: Mapping, key: str) -> str:
    if key not in config:
        return "absent"
    text = json.dumps(config[key])
    return text if len(text) <= 60 else text[:57] + "..."


def _recorded_files(parsed: ParsedSpec, target) -> tuple[list, list[Problem]]:
    """(recorded entry, FileLayout) of each file the manifest describes that ``target`` has.

    A file is compared whole only when ``target`` has the manifest's kind of output (the
    same format, or a checkpoint folder for a folder); otherwise its tensors alone are.
    """
    from .formats.sharded import find_index

    output = parsed.manifest.get("output")
    output = output if isinstance(output, dict) else {}
    files = output.get("files")
    recorded = [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    fmt = output.get("format")
    pairs, problems = [], []
    if fmt == FOLDER_FORMAT:
        index = find_index(target)
        folder = index.parent if index is not None else Path(target)
        if not folder.is_dir():
            return [], []
        problems += _unrecorded(folder, recorded)
        for entry in recorded:
            name = str(entry.get("name"))
            path = folder / name
            try:
                present = "/" not in name and name not in ("", ".", "..") and path.is_file()
            except OSError:  # a name no filesystem takes: not there
                present = False
            if not present:
                problems.append(Problem("", "file", f"{name[:100]}: missing from {folder}"))
                continue
            try:
                if name.endswith(layout.WEIGHT_SUFFIX):
                    found = layout.of_file(path, fmt="safetensors")
                else:
                    found = layout.of_plain(path)
            except (FileFormatError, OSError) as exc:
                problems.append(Problem("", "file", f"{name}: {exc}"))
                continue
            pairs.append((entry, found))
        return pairs, problems
    if len(recorded) != 1 or Path(target).is_dir() or formats.sniff(target) != fmt:
        return [], []
    try:
        found = layout.of_file(target, fmt=fmt)
    except (FileFormatError, OSError):
        return [], []  # tensors not stored as raw bytes: compared through the reader
    return [(recorded[0], found)], []


def _unrecorded(folder: Path, recorded: list[dict]) -> list[Problem]:
    """Weight files or indexes in the folder that the manifest does not describe: a loader
    would read them (transformers takes model.safetensors before an index)."""
    names = {str(f.get("name")) for f in recorded}
    extra = sorted(
        p.name
        for p in folder.iterdir()
        if p.name.endswith((".safetensors", ".safetensors.index.json")) and p.name not in names
    )
    return [Problem("", "file", f"{name}: in {folder} but not in the manifest") for name in extra]


@dataclass
class _FileScan:
    pieces: list  # (layout.Piece, [Future of block digest] or None)
    sha256: hashlib._Hash | None


class _Scanner:
    """Reads files block by block and hashes on threads: block digests in a pool, in-order
    hashes (sha256) on two threads of their own."""

    WINDOW = 4  # blocks read ahead per hashing thread

    def __init__(self, jobs: int, block_bytes: int):
        self.jobs = jobs
        self.block_bytes = block_bytes
        self._pool = ThreadPoolExecutor(jobs, thread_name_prefix="weightgen-verify")
        self._in_order = [ThreadPoolExecutor(1) for _ in range(2)]

    def close(self) -> None:
        for pool in (self._pool, *self._in_order):
            pool.shutdown(wait=True, cancel_futures=True)

    def scan(self, parsed: ParsedSpec, found: layout.FileLayout, comparable, hashed) -> _FileScan:
        v2 = parsed.version >= 2
        want_sha = not v2 or "sha256" in _recorded_of(parsed, found.name)
        file_sha = hashlib.sha256() if want_sha else None
        with open(found.path, "rb") as f:
            with contextlib.suppress(AttributeError, OSError):  # read ahead further
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if v2 and file_sha is None:
                pieces = self._scan_parallel(f.fileno(), found, comparable, hashed)
            else:
                pieces = self._scan_in_order(f.fileno(), found, comparable, hashed, file_sha, v2)
            for _, blocks in pieces:  # surface a short read here, as this file's problem
                for future in blocks or ():
                    future.result()
        return _FileScan(pieces, file_sha)

    def _scan_parallel(self, fd: int, found: layout.FileLayout, comparable, hashed) -> list:
        """Format 2 alone: each thread reads and hashes whole blocks (several reads in
        flight, which a disk serves faster than one sequential stream)."""
        pieces = []
        for piece in found.pieces():
            blocks = [
                self._pool.submit(_read_digest, fd, start, min(self.block_bytes, end - start))
                for end in [piece.offset + piece.nbytes]
                for start in range(piece.offset, end, self.block_bytes)
            ]
            if piece.tensor in comparable:
                hashed[piece.tensor] = blocks
            pieces.append((piece, blocks))
        return pieces

    def _scan_in_order(self, fd: int, found, comparable, hashed, file_sha, v2: bool) -> list:
        """sha256 must see every byte in order: this thread reads, the block digests run in
        the pool, the sha256s (the file's; each tensor's in format 1) on threads of their own."""
        pieces = []
        window: collections.deque[list[Future]] = collections.deque()
        for piece in found.pieces():
            tensor = piece.tensor if piece.tensor in comparable else None
            blocks: list[Future] | None = [] if v2 else None
            update: Callable | None = None
            if tensor is not None and not v2:
                hashed[tensor] = hashlib.sha256()
                update = hashed[tensor].update
            for data in layout.read_blocks(fd, piece, self.block_bytes):
                futures = []
                if blocks is not None:
                    blocks.append(self._pool.submit(digest.block_digest, data))
                    futures.append(blocks[-1])
                if file_sha is not None:
                    futures.append(self._in_order[0].submit(file_sha.update, data))
                if update is not None:
                    futures.append(self._in_order[1].submit(update, data))
                window.append(futures)
                if len(window) > self.WINDOW * (self.jobs + 2):
                    for future in window.popleft():
                        future.result()
            if tensor is not None and v2:
                hashed[tensor] = blocks
            pieces.append((piece, blocks))
        for futures in window:
            for future in futures:
                future.result()
        return pieces


def _read_digest(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise FileFormatError(f"file ends at byte {offset + len(data)}, inside its data")
    return digest.block_digest(data)


def _recorded_of(parsed: ParsedSpec, name: str) -> dict:
    files = (parsed.manifest.get("output") or {}).get("files") or []
    for entry in files:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return files[0] if len(files) == 1 and isinstance(files[0], dict) else {}


def _scan_by_reader(parsed: ParsedSpec, target, entries: list[TensorEntry], hashed) -> list:
    """Tensors whose bytes are not raw in a file weightgen described: hashed as the reader
    streams them (a conversion to another format, a compressed member)."""
    problems = []
    reader = formats.open_reader(target)
    try:
        for entry in entries:
            if parsed.version >= 2:
                hasher = digest.BlockHasher(entry.nbytes, block_bytes=parsed.block_bytes)
            else:
                hasher = hashlib.sha256()
            try:
                for chunk in reader.iter_chunks(entry):
                    hasher.update(formats.base.as_bytes(chunk))
            except (WeightgenError, OSError) as exc:
                problems.append(Problem(entry.name, "file", str(exc)))
                continue
            if parsed.version >= 2:
                done = hasher.digests
                hashed[entry.name] = [_done(done[b]) for b in range(len(done))]
            else:
                hashed[entry.name] = hasher
    finally:
        reader.close()
    return problems


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _compare_tensors(parsed: ParsedSpec, comparable, hashed) -> list[Problem]:
    problems = []
    for name in comparable:
        got = hashed.get(name)
        if got is None:
            continue  # its file could not be read: reported already
        if parsed.version < 2:
            want = parsed.expected_sha256[name]
            if got.hexdigest() != want:
                detail = f"sha256 {got.hexdigest()[:16]}..., manifest {want[:16]}..."
                problems.append(Problem(name, "differs", detail))
            continue
        blocks = [future.result() for future in got]
        want_blocks = parsed.expected_blocks[name]
        if len(blocks) != len(want_blocks):
            detail = f"{len(blocks)} blocks of data, the manifest has {len(want_blocks)}"
            problems.append(Problem(name, "differs", detail))
            continue
        for i, (have, want) in enumerate(zip(blocks, want_blocks)):
            if have != want:
                start = i * parsed.block_bytes
                stop = min(start + parsed.block_bytes, comparable[name].nbytes)
                detail = (
                    f"block {i} (bytes {start}..{stop} of its data) differs"
                    f"{'' if len(blocks) == 1 else f' (first of {len(blocks)} blocks)'}: "
                    f"{have.hex()[:16]}..., manifest {want.hex()[:16]}..."
                )
                problems.append(Problem(name, "differs", detail))
                break
    return problems


def _compare_file(parsed: ParsedSpec, recorded: dict, found, scan: _FileScan, differing) -> list:
    """A file's own digest (format 2) or sha256 (format 1, or recorded on request): a
    difference outside the tensors' data (a header, the metadata, an index) shows here."""
    in_file = {p.tensor for p, _ in scan.pieces if p.tensor is not None}
    if in_file & differing:
        return []  # already named tensor by tensor
    name = recorded.get("name", found.name)
    if parsed.version >= 2 and "digest" in recorded:
        parts = [digest.compose(b.result() for b in blocks) for _, blocks in scan.pieces]
        if digest.file_digest(parts).hex() != recorded["digest"]:
            return [_outside(found, name)]
    sha256 = scan.sha256
    if sha256 is not None and "sha256" in recorded and sha256.hexdigest() != recorded["sha256"]:
        return [_outside(found, name)]
    return []


def _outside(found: layout.FileLayout, name: str) -> Problem:
    if not found.spans:
        return Problem("", "file", f"{name}: file bytes differ from the manifest")
    return Problem(
        "", "file", f"{name}: bytes outside the tensors' data differ (header or metadata)"
    )
