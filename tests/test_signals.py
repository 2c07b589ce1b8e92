"""SIGTERM and SIGHUP end a run as Ctrl-C does: real processes, each in its own session with
a short timeout (killed if a test fails), signalled while planning, generating and
committing. Nothing is left but the old destination, and the run says so in one line.

A signal at an exact point comes from the process itself: a launcher (``python -c
SIGNAL_HOOK``, from conftest.py) wraps one weightgen function so that the process signals
itself as the function begins;
nothing in weightgen knows about it. "generating" is signalled from outside, as SLURM or
``docker stop`` would, once the temporary output holds data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SIGNAL_HOOK

import weightgen

ENV = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.pathsep.join(sys.path)}
LIMIT = 120  # seconds: no process of a test runs longer
TMP_MARK = ".weightgen-tmp"


CONFIG = {  # a small llama: 47 MiB in float32, six tensors a layer
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
}
# Slow enough (small chunks) that "generating" lasts seconds.
TENSOR = ["normal", "--shape", "8192,8192", "--chunk-size", "65536"]
SLOW_FOLDER = ["--chunk-size", "4096"]

POINTS = {  # where the process signals itself (None: from outside, while generating)
    "planning": "weightgen.api:_check",
    "generating": None,
    "committing": "weightgen.output:Target.sync",
}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TMP_MARK in p.name)


def written(folder: Path) -> int:
    """Bytes on disk under the temporaries in ``folder`` (allocated blocks: a file laid out
    at its full size holds only what was written)."""
    total = 0
    for path in folder.iterdir():
        if TMP_MARK not in path.name:
            continue
        files = path.iterdir() if path.is_dir() else [path]
        with contextlib.suppress(OSError):
            total += sum(f.stat().st_blocks * 512 for f in files)
    return total


def default_sigint() -> None:
    """Ctrl-C as a terminal delivers it: a shell without job control (CI, `cmd &`) starts
    its children with SIGINT ignored, and an ignored signal is left ignored (nohup's rule)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(argv, cwd: Path, *, signal_at: str | None = None, preexec=None) -> subprocess.Popen:
    env = dict(ENV)
    launcher = ["-m", "weightgen"]
    if signal_at is not None:
        env["SIGNAL_AT"] = signal_at
        launcher = ["-c", SIGNAL_HOOK]
    return subprocess.Popen(
        [sys.executable, *launcher, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=preexec,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the process did not end")
    return proc.returncode, err


def signal_while_generating(proc: subprocess.Popen, folder: Path, signum: int) -> None:
    """Send ``signum`` once the temporary output holds some data, the process still running."""
    deadline = time.monotonic() + LIMIT / 2
    try:
        while written(folder) < 4 << 20:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the run ended (or never started writing) before the signal")
            time.sleep(0.01)
        os.kill(proc.pid, signum)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


@pytest.fixture
def old_output(tmp_path):
    """An existing tensor file and model folder, to be replaced with --force."""
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    weightgen.generate("zeros", (4,), tmp_path / "w.safetensors")
    weightgen.write_model(CONFIG, tmp_path / "model")
    before = {
        p.relative_to(tmp_path): p.read_bytes()
        for p in [tmp_path / "w.safetensors", *(tmp_path / "model").iterdir()]
    }
    return tmp_path, before


def unchanged(folder: Path, before: dict) -> bool:
    now = {
        p.relative_to(folder): p.read_bytes()
        for p in [folder / "w.safetensors", *(folder / "model").iterdir()]
    }
    return now == before


def command(output: str) -> list[str]:
    if output == "tensor":
        return [*TENSOR, "-o", "w.safetensors", "--force", "-q"]
    return ["hf", "config.json", "-o", "model", "--force", "-q", "--seed", "1", *SLOW_FOLDER]


@pytest.mark.slow
@pytest.mark.parametrize("output", ["tensor", "folder"])
@pytest.mark.parametrize(
    "point, signum",
    [
        ("planning", signal.SIGTERM),
        ("generating", signal.SIGTERM),
        ("generating", signal.SIGHUP),
        ("committing", signal.SIGHUP),
        ("committing", signal.SIGTERM),
    ],
)
def test_a_signal_ends_the_run_as_ctrl_c_does(old_output, output, point, signum):
    folder, before = old_output
    at = POINTS[point]
    proc = start(command(output), folder, signal_at=None if at is None else f"{at}={signum}")
    if at is None:
        signal_while_generating(proc, folder, signum)
    code, err = finish(proc)
    name = signal.Signals(signum).name
    assert code == 128 + signum, err
    assert err == f"weightgen: error: terminated ({name}); no output was written\n"
    assert leftovers(folder) == []
    assert unchanged(folder, before)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("output", "signum", "verb"),
    [
        ("tensor", signal.SIGTERM, "terminated"),
        ("folder", signal.SIGTERM, "terminated"),
        ("folder", signal.SIGINT, "interrupted"),  # Ctrl-C too: not "aborted"
    ],
)
def test_a_signal_during_the_renames_waits_for_them(old_output, output, signum, verb):
    """Between the output's rename and its manifest's, a signal would leave one without the
    other: it waits, and the run ends saying the output is complete (and it is)."""
    folder, before = old_output
    argv = command(output) + (["--manifest", "w.m.json"] if output == "tensor" else [])
    proc = start(
        argv,
        folder,
        signal_at=f"weightgen.output:Target.rename={signum}",
        preexec=default_sigint if signum == signal.SIGINT else None,
    )
    code, err = finish(proc)
    path = "w.safetensors" if output == "tensor" else "model"
    name = signal.Signals(signum).name
    assert code == 128 + signum, err
    assert err == f"weightgen: error: {verb} ({name}) after {path} was written; it is complete\n"
    assert leftovers(folder) == []
    assert not unchanged(folder, before)
    manifest = folder / ("w.m.json" if output == "tensor" else "model/weightgen.manifest.json")
    assert weightgen.verify(manifest, folder / path) == []


# A signal whose handler runs inside a garbage-collector callback (JAX registers one): there
# Python would print the exception with a traceback and drop it, and the run would go on.
IN_GC = """
import gc, os, signal
import weightgen.api as api
original, fired = api._check, []
def in_gc(phase, info):
    if phase == "start" and not fired:
        fired.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # the handler runs here, inside the callback
def check(*args, **kwargs):
    gc.callbacks.append(in_gc)
    gc.collect()
    return original(*args, **kwargs)
api._check = check
from weightgen.cli import main
main()
"""


@pytest.mark.slow
def test_a_signal_inside_a_gc_callback_is_not_lost(old_output):
    folder, before = old_output
    proc = subprocess.Popen(
        [sys.executable, "-c", IN_GC, *command("tensor")],
        cwd=folder,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    code, err = finish(proc)
    assert code == 143, err
    assert err == "weightgen: error: terminated (SIGTERM); no output was written\n"
    assert leftovers(folder) == []
    assert unchanged(folder, before)


@pytest.mark.slow
def test_a_library_caller_still_dies_of_the_signal_after_the_cleanup(old_output):
    """A Python program calling weightgen has SIGTERM at its default: it dies of it, as it
    would have, but the write removes its temporary first."""
    folder, before = old_output
    code = (
        "import weightgen\n"
        "weightgen.generate('normal', (8192, 8192), 'w.safetensors', force=True,"
        " chunk_size=65536)\n"
        "print('not reached')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=folder,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    signal_while_generating(proc, folder, signal.SIGTERM)
    returncode, err = finish(proc)
    assert returncode == -signal.SIGTERM, err
    assert leftovers(folder) == []
    assert unchanged(folder, before)


@pytest.mark.slow
def test_an_ignored_sighup_stays_ignored(old_output):
    """nohup: a SIGHUP the caller ignores is not taken over; the run completes."""
    folder, _ = old_output

    def ignore_sighup():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = start(command("tensor"), folder, preexec=ignore_sighup)
    signal_while_generating(proc, folder, signal.SIGHUP)
    code, err = finish(proc)
    assert code == 0, err
    assert leftovers(folder) == []
    assert weightgen.load(folder / "w.safetensors")["weight"].shape == (8192, 8192)
