"""Crash safety and hostile input: kills, full disks, file-size limits, malformed files,
random bytes and JSON, manifest bombs, and tensor names."""

from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightgen
from weightgen.errors import FileFormatError, UsageError, WeightgenError
from weightgen.formats import hdf5, npz, safetensors
from weightgen.plan import Plan, check_name, make_tensor
from weightgen.specfile import parse_document, parse_spec

ENV = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.pathsep.join(sys.path)}
CLI = [sys.executable, "-m", "weightgen"]
TMP_MARK = ".weightgen-tmp"


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TMP_MARK in p.name)


# --- the kill matrix ------------------------------------------------------------------------

BIG = ["normal", "--shape", "8192,8192", "--chunk-size", "65536", "-q"]  # 256 MiB, 1024 chunks
BIG_BYTES = 8192 * 8192 * 4


def _kill_when(argv, folder: Path, fraction: float | None, timeout=120.0) -> None:
    """Start the CLI and SIGKILL it once its temporary output holds ``fraction`` of the data
    (None: as soon as the process runs, before any file exists)."""
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while fraction is not None and time.monotonic() < deadline:
            sizes = [p.stat().st_size for p in folder.rglob(f"*{TMP_MARK}*") if p.is_file()]
            sizes += [
                q.stat().st_size
                for p in folder.iterdir()
                if p.is_dir() and TMP_MARK in p.name
                for q in p.iterdir()
            ]
            if sum(sizes) >= fraction * BIG_BYTES:
                break
            if proc.poll() is not None:
                pytest.fail("the run finished before it could be killed")
            time.sleep(0.002)
        else:
            time.sleep(0.2 if fraction is None else 0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [None, 0.05, 0.5, 0.95])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_kill_leaves_destination_absent_or_unchanged(tmp_path, fraction, existing):
    dest = tmp_path / "w.safetensors"
    if existing:
        dest.write_bytes(b"the old file")
    argv = [*CLI, *BIG, "-o", str(dest), "--force"]
    _kill_when(argv, tmp_path, fraction)
    if existing:
        assert dest.read_bytes() == b"the old file"
    else:
        assert not dest.exists()
    # The rerun succeeds, and cleans the dead run's temporary.
    subprocess.run(argv, env=ENV, check=True)
    assert dest.stat().st_size > BIG_BYTES
    assert _strays(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_kill_while_writing_a_sharded_folder(tmp_path, fraction):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"tensors": {f"layer.{i}": {"init": "normal", "shape": [4096, 2048]} for i in range(8)}}
        )
    )
    folder = tmp_path / "ckpt"
    old = [
        *CLI,
        "run",
        str(spec),
        "-o",
        str(folder),
        "--max-shard-size",
        "64MiB",
        "-q",
        "--chunk-size",
        "65536",
        "--no-manifest",
    ]
    subprocess.run(old, env=ENV, check=True)
    before = {p.name: p.read_bytes()[:4096] for p in folder.iterdir()}
    spec.write_text(spec.read_text().replace("normal", "uniform"))
    _kill_when([*old, "--force"], tmp_path, fraction)
    assert {p.name: p.read_bytes()[:4096] for p in folder.iterdir()} == before
    subprocess.run([*old, "--force"], env=ENV, check=True)
    assert _strays(tmp_path) == []
    assert weightgen.load(folder)["layer.0"].min() >= 0  # the new, uniform, checkpoint


def test_stale_temporaries_of_dead_runs_only_are_cleaned(tmp_path, run_cli):
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        stale = tmp_path / f".w.safetensors.abc123.{dead.pid}{TMP_MARK}"
        stale.write_bytes(b"x")
        stale_dir = tmp_path / f".ckpt.def456.{dead.pid}{TMP_MARK}"
        stale_dir.mkdir()
        (stale_dir / "model-00001-of-00001.safetensors").write_bytes(b"y")
        running = tmp_path / f".w.safetensors.ghi789.{live.pid}{TMP_MARK}"
        running.write_bytes(b"z")
        assert run_cli("zeros", "--shape", "4", "-o", str(tmp_path / "w.safetensors")).code == 0
        assert not stale.exists() and not stale_dir.exists()
        assert running.read_bytes() == b"z"  # another live run's: untouched
    finally:
        live.kill()
        live.wait()


def test_final_permissions_follow_umask(tmp_path, run_cli):
    old = os.umask(0o027)
    try:
        assert run_cli("ones", "--shape", "4", "-o", str(tmp_path / "w.npz"), "-q").code == 0
    finally:
        os.umask(old)
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o640


# --- full disks and file-size limits -------------------------------------------------------


def test_file_size_limit_efbig(tmp_path):
    dest = tmp_path / "w.safetensors"
    dest.write_bytes(b"keep me")

    # ulimit -f 1024: writes past 1 MiB fail with EFBIG (Python ignores SIGXFSZ).
    command = " ".join([*CLI, "normal", "--shape", "1024,1024", "-o", str(dest), "--force", "-q"])
    proc = subprocess.run(
        ["bash", "-c", f"ulimit -f 1024 && exec {command}"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "File too large" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert dest.read_bytes() == b"keep me"
    assert _strays(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_injected_enospc(tmp_path, run_cli, monkeypatch, where):
    from weightgen import atomic

    dest = tmp_path / "w.safetensors"
    dest.write_bytes(b"keep me")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "write":
        original = atomic.os.pwrite

        def pwrite(fd, data, offset):
            if offset > 100_000:
                raise full
            return original(fd, data, offset)

        monkeypatch.setattr(atomic.os, "pwrite", pwrite)
    else:
        monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(full))
    result = run_cli(
        "normal", "--shape", "512,512", "-o", str(dest), "--force", "--chunk-size", "4096"
    )
    assert result.code == 1
    assert result.stderr.count("\n") == 1
    assert "No space left on device" in result.stderr and "free some space" in result.stderr
    assert dest.read_bytes() == b"keep me"
    assert _strays(tmp_path) == []


# --- the malformed-safetensors corpus (after safetensors' own reader tests) -----------------


def _st(header: object, data: bytes = b"", *, length: int | None = None, raw: bytes | None = None):
    text = raw if raw is not None else json.dumps(header).encode()
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
CORPUS = {
    "empty file": b"",
    "header too small": b"\x01\x00\x00",
    "header too large": _st(GOOD, bytes(16), length=100_000_001),
    "length past the end": _st(GOOD, bytes(16), length=10_000),
    "not utf-8": _st(None, raw=b'{"w\xff": 1}'),
    "not json": _st(None, raw=b"{not json}"),
    "not an object": _st([1, 2, 3]),
    "duplicate keys": _st(
        None,
        bytes(16),
        raw=b'{"w": {"dtype": "F32", "shape": [2, 2], '
        b'"data_offsets": [0, 16]}, "w": {"dtype": "F32", "shape": [2, 2], '
        b'"data_offsets": [0, 16]}}',
    ),
    "metadata not a string map": _st({"__metadata__": {"a": 1}, **GOOD}, bytes(16)),
    "unknown dtype": _st({"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
    "missing field": _st({"w": {"dtype": "F32", "shape": [2]}}, bytes(8)),
    "negative dim": _st({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),
    "overlapping offsets": _st(
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        },
        bytes(12),
    ),
    "gap between tensors": _st(
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]},
        },
        bytes(20),
    ),
    "not starting at 0": _st(
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)
    ),
    "span not matching shape": _st(
        {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)
    ),
    "shape overflow": _st(
        {"w": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}, bytes(8)
    ),
    "incomplete buffer": _st(GOOD, bytes(10)),
    "trailing bytes": _st(GOOD, bytes(20)),
    "reversed offsets": _st({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}),
    "deep nesting": _st(None, raw=b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_malformed_safetensors_refused_cleanly(tmp_path, run_cli, case):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(CORPUS[case])
    with pytest.raises(FileFormatError):
        safetensors.Reader(path).close()
    result = run_cli("inspect", str(path))
    assert result.code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_corpus_is_also_rejected_by_the_reference_reader(tmp_path):
    """Our refusals agree with the safetensors package, except where weightgen is stricter:
    the reference reader keeps the last of duplicate keys; weightgen refuses them."""
    from safetensors import safe_open

    for case, data in CORPUS.items():
        if case in ("deep nesting", "duplicate keys"):
            continue
        path = tmp_path / f"{case}.safetensors"
        path.write_bytes(data)
        with pytest.raises(Exception), safe_open(str(path), framework="numpy") as f:  # noqa: B017
            for key in f.keys():  # noqa: SIM118
                f.get_tensor(key)


# --- random bytes, random JSON ----------------------------------------------------------


def _valid_files(tmp_path) -> dict[str, bytes]:
    plan = Plan.of(
        [
            make_tensor("normal", (3, 5), seed=1, name="a"),
            make_tensor("ones", (4,), dtype="bfloat16", name="b"),
        ]
    )
    files = {}
    for suffix in (".safetensors", ".npz", ".h5"):
        path = tmp_path / f"seed{suffix}"
        if not path.exists():
            weightgen.write(plan, path)
        files[suffix] = path.read_bytes()
    return files


READERS = {".safetensors": safetensors.Reader, ".npz": npz.Reader, ".h5": hdf5.Reader}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_bytes_never_crash_a_reader(tmp_path_factory, data):
    tmp = tmp_path_factory.getbasetemp() / "fuzz"
    tmp.mkdir(exist_ok=True)
    files = _valid_files(tmp)
    suffix = data.draw(st.sampled_from(list(READERS)))
    original = files[suffix]
    mode = data.draw(st.sampled_from(["random", "mutate", "truncate"]))
    if mode == "random":
        blob = data.draw(st.binary(max_size=4096))
    elif mode == "truncate":
        blob = original[: data.draw(st.integers(0, len(original) - 1))]
    else:
        blob = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    path = tmp / f"case{suffix}"
    path.write_bytes(blob)
    try:
        reader = READERS[suffix](path)
        try:
            for entry in reader.entries:
                for _ in reader.iter_chunks(entry, 64):
                    pass
        finally:
            reader.close()
    except WeightgenError:
        pass


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
tensor_like = st.fixed_dictionaries(
    {
        "init": st.sampled_from(["normal", "he-normal", "orthogonal", "nope", 3]),
        "shape": st.lists(st.integers(-2, 9), max_size=4) | json_values,
    },
    optional={
        "dtype": st.sampled_from(["float32", "bfloat16", "int8", 1]),
        "stddev": json_values,
        "in_axis": json_values,
        "seed": json_values,
        "bogus": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    json_values
    | st.fixed_dictionaries(
        {"tensors": st.dictionaries(st.text(max_size=8), tensor_like, max_size=3)},
        optional={"seed": json_values, "dtype": json_values},
    )
)
def test_random_json_never_crashes_the_spec_parser(document):
    try:
        parsed = parse_document(json.dumps(document), "json")
        parse_spec(parsed)
    except UsageError:
        pass


# --- verify catches every bit flip and every truncation of a small file -----------------


def test_every_bit_flip_and_truncation_is_caught(tmp_path):
    out = tmp_path / "w.safetensors"
    plan = Plan.of(
        [
            make_tensor("normal", (5,), seed=1, name="a"),
            make_tensor("uniform", (3,), dtype="bfloat16", seed=2, name="b"),
        ]
    )
    weightgen.write(plan, out, manifest=tmp_path / "m.json")
    manifest = str(tmp_path / "m.json")
    original = out.read_bytes()
    flips = truncations = 0
    for i in range(len(original)):
        for bit in range(8):
            damaged = bytearray(original)
            damaged[i] ^= 1 << bit
            out.write_bytes(bytes(damaged))
            assert weightgen.verify(manifest, out), (i, bit)
            flips += 1
    for n in range(len(original)):
        out.write_bytes(original[:n])
        assert weightgen.verify(manifest, out), n
        truncations += 1
    out.write_bytes(original)
    assert weightgen.verify(manifest, out) == []
    assert flips == 8 * len(original) and truncations == len(original)


# --- manifest bombs -----------------------------------------------------------------------


def _bomb(tmp_path, text: str):
    """Run the CLI on a hostile spec; return (exit code, stderr, seconds, peak RSS MiB)."""
    path = tmp_path / "bomb.json"
    path.write_text(text)
    code = (
        "import sys, time\n"
        "from weightgen.cli import main\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    main(['run', sys.argv[1], '-o', sys.argv[2]])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(code, time.perf_counter() - t, int(hwm.split()[1]) / 1024)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "out.safetensors")],
        env=ENV,
        capture_output=True,
        text=True,
    )
    exit_code, seconds, rss = proc.stdout.split()
    return int(exit_code), proc.stderr, float(seconds), float(rss)


BOMBS = {
    "deep nesting": '{"tensors": ' + "[" * 200_000 + "]" * 200_000 + "}",
    "5000-digit integer": '{"seed": ' + "9" * 5000 + ', "tensors": {"w": {"init": "ones", '
    '"shape": [1]}}}',
    "5000-digit dimension": '{"tensors": {"w": {"init": "ones", "shape": [' + "9" * 5000 + "]}}}",
    "shape of [2**40]*4": json.dumps({"tensors": {"w": {"init": "normal", "shape": [2**40] * 4}}}),
    "a million dimensions": json.dumps({"tensors": {"w": {"init": "ones", "shape": [1] * 10**6}}}),
    "a million tensors": json.dumps({"tensors": {f"t{i}": {} for i in range(10**6)}}),
    "65 MiB of whitespace": " " * (65 << 20),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_manifest_bombs_refused_fast_and_small(tmp_path, name):
    code, stderr, seconds, rss = _bomb(tmp_path, BOMBS[name])
    assert code in (1, 2), stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert seconds < 1.0, seconds
    assert rss < 300, rss  # MiB (peak of this process): the parsed document, no tensor
    assert not (tmp_path / "out.safetensors").exists()


# --- names ----------------------------------------------------------------------------------

name_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=24
) | st.sampled_from(
    [
        "a/b",
        "../x",
        "/abs",
        "a//b",
        "a/./b",
        "a\x00b",
        "tab\there",
        "",
        "__metadata__",
        "layer.0/w",
        "ünïcødé",
        "a/",
        "x" * 1025,
    ]
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=name_text)
def test_names_round_trip_or_fail_before_io(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp("names")
    try:
        check_name(name)
    except UsageError:
        for suffix in (".safetensors", ".npz", ".h5"):
            with pytest.raises(UsageError):
                weightgen.generate("ones", (2,), folder / f"w{suffix}", name=name)
        assert list(folder.iterdir()) == []
        return
    for suffix in (".safetensors", ".npz", ".h5"):
        path = folder / f"w{suffix}"
        weightgen.generate("ones", (2,), path, name=name)
        assert list(weightgen.load(path)) == [name]
    np.testing.assert_array_equal(weightgen.load(folder / "w.h5")[name], np.ones(2, np.float32))


def test_control_characters_are_exactly_unicode_cc_and_cs():
    """check_name's one regex refuses exactly the code points whose category is Cc or Cs."""
    import unicodedata

    from weightgen.plan import _CONTROL

    for code in range(0x110000):
        char = chr(code)
        assert bool(_CONTROL.search(char)) == (unicodedata.category(char) in ("Cc", "Cs")), code


# --- the positional writer: O_DIRECT where it can, the page cache where it must ------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(0, 2**20), max_size=8),
    order=st.randoms(use_true_random=False),
    chunk=st.integers(1, 300_000),
    mode=st.sampled_from(["direct", "no-direct", "einval"]),
)
def test_positional_writer_puts_every_byte_where_asked(tmp_path_factory, cuts, order, chunk, mode):
    """Streams (writes that continue one another) and jumps, of any sizes and alignments,
    land exactly, whether direct I/O works, is unavailable, or is refused midway."""
    from weightgen import writes

    path = tmp_path_factory.mktemp("pw") / "f"
    size = 2**20
    edges = sorted({0, size, *cuts})
    layout = [(a, b - a) for a, b in itertools.pairwise(edges) if order.random() < 0.8]
    order.shuffle(layout)  # disjoint ranges, as writers' pieces are, in any order
    expected = bytearray(size)
    rng = np.random.default_rng(len(layout) * 7919 + chunk)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, size)
    real_pwrite, real_block = os.pwrite, writes.DIRECT_BLOCK
    writes.DIRECT_BLOCK = 1 << 16  # many full blocks in a small file
    writer = writes.PositionalWriter(fd, None if mode == "no-direct" else path)
    assert (writer._direct is None) == (mode == "no-direct")  # tmp_path takes O_DIRECT here
    if mode == "einval" and writer._direct is not None:
        direct = writer._direct

        def refusing(target, data, offset):
            if target == direct and offset > 2**19:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_pwrite(target, data, offset)

        os.pwrite = refusing
    try:
        for start, length in layout:
            data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            expected[start : start + length] = data
            for at in range(0, length, chunk):  # one stream, fed in chunks
                writer.write(start + at, data[at : at + chunk])
        writer.close()
    finally:
        os.pwrite, writes.DIRECT_BLOCK = real_pwrite, real_block
        os.close(fd)
    assert path.read_bytes() == bytes(expected)


def test_direct_buffers_are_huge_page_aligned():
    """The staging buffers start on a 2 MiB boundary (so huge pages can back them whole, and
    any O_DIRECT alignment holds), hold exactly what was asked, and are writable."""
    from weightgen import writes

    for nbytes in (4096, 1 << 16, writes.DIRECT_BLOCK):
        buffer = writes.aligned_buffer(nbytes)
        assert buffer.nbytes == nbytes and buffer.dtype == np.uint8
        assert buffer.ctypes.data % (2 << 20) == 0
        buffer[-1] = 7
        assert buffer[-1] == 7


def test_many_shard_files_never_wait_for_a_buffer(tmp_path):
    """More files than buffers, each with a stream staged: none may wait for a buffer that
    only another file's unfinished stream holds (a hang). Run apart, with a deadline."""
    spec = {"tensors": {f"t{i}": {"init": "normal", "shape": [50_000]} for i in range(9)}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = (
        "import sys, weightgen; from weightgen import writes\n"
        "writes.DIRECT_BLOCK = 1 << 16\n"
        "weightgen.run_spec(sys.argv[1], sys.argv[2], max_shard_size=150_000)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "spec.json"), str(tmp_path / "ckpt")],
        check=True,
        timeout=120,
        env={**os.environ, "XLA_FLAGS": ""},
    )
    assert len(list((tmp_path / "ckpt").glob("model-*.safetensors"))) == 9
    whole = weightgen.run_spec(str(tmp_path / "spec.json"), tmp_path / "one.safetensors")
    loaded = weightgen.load(tmp_path / "ckpt")
    assert {t.name: t.digest for t in whole.tensors} == {
        n: weightgen.digest.digest_of(a.tobytes()).hex() for n, a in loaded.items()
    }
