"""scripts/gpu_check.py, run the way the test suite can: on the CPU, with small sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_small_sizes(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--out", str(out), "--workdir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["meta"]["failed"] is False and report["meta"]["small"] is True
    sections = {row["section"] for row in report["rows"]}
    assert sections == {"env", "parity", "cpu", "rate", "hf"}
    parity = [row for row in report["rows"] if row["section"] == "parity"]
    assert len(parity) >= 8 and all(row["result"] is True for row in parity)
    assert "section | check" in proc.stdout  # the one table, printed
    assert [p.name for p in tmp_path.iterdir()] == ["check.json"]  # its files are gone
