"""What the trainer clients share: the job loop and the statistics they print.

Each client (titan_client.py, megatron_client.py, olmo_client.py, beside this file) runs in
a process of its own, with PYTHONPATH set to its trainer's folder under .venv/trainers (see
the Makefile) and torch from the main venv; tests/test_trainers.py starts it as

    python tests/trainers/<trainer>_client.py JOBS.json

JOBS.json is a list of {"label": ..., "model": ..., "args": {...}}: one tiny model each,
built by the trainer's own builders and initialised by the trainer's own init on CPU in
float32. The client prints one JSON object: {"trainer", "version", "torch", "reports":
[...]}, one report per job, in order: {"ok": true, "tensors": {name: stats}, ...} or
{"ok": false, "error": "..."} (so a test names the job that failed).

This module imports torch only inside functions: the clients stub modules in sys.modules
before anything imports the trainer.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable


def stats(tensor) -> dict:
    """A tensor as the tests compare it: shape, count, mean, std (population), max |x|,
    all zeros, all ones, and its all-zero rows (rows along the last axis: a zeroed padding
    row of an embedding shows as 1)."""
    import torch

    x = tensor.detach().to(torch.float64)
    flat = x.flatten()
    rows = 0
    if x.ndim >= 2 and x.numel():
        rows = int((x.reshape(-1, x.shape[-1]) == 0).all(dim=1).sum())
    return {
        "shape": list(x.shape),
        "numel": x.numel(),
        "mean": float(flat.mean()) if x.numel() else 0.0,
        "std": float(flat.std(unbiased=False)) if x.numel() else 0.0,
        "maxabs": float(flat.abs().max()) if x.numel() else 0.0,
        "all_zeros": bool((flat == 0).all()),
        "all_ones": bool((flat == 1).all()),
        "zero_rows": rows,
    }


def check_version(trainer: str, installed: str, checked: str) -> None:
    """The clients reach into private names of one release: refuse any other."""
    if installed != checked:
        raise SystemExit(
            f"{trainer} {installed} is installed, but this client was checked against "
            f"{checked} only: run make install-test"
        )


def main(trainer: str, version: str, run: Callable[[dict], dict]) -> None:
    """Run every job of the JSON file named on the command line; print one JSON object."""
    import torch

    torch.set_num_threads(1)  # tiny models: threads only contend with the test process
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    reports = []
    for job in jobs:
        try:
            reports.append({"ok": True, **run(job)})
        except Exception as exc:  # reported, so the test names the job that failed
            trace = traceback.format_exc(limit=-3)
            reports.append({"ok": False, "error": f"{type(exc).__name__}: {exc}\n{trace}"})
    answer = {"trainer": trainer, "version": version, "torch": torch.__version__}
    json.dump({**answer, "reports": reports}, sys.stdout)
