"""weightgen --from-transformers with whichever transformers is importable: run as a separate
process by test_from_transformers.py, once per transformers version (4.57.6 comes first on
PYTHONPATH). ``python from_transformers_client.py JOBS.json`` prints one report per job.

Jobs:
- ``{"kind": "spec", "config": {...}, "dtype": D, "rules": [...]}``: weightgen.model_spec(...,
  from_transformers=True); the spec, or the error.
- ``{"kind": "write", "config": {...}, "folder": DIR, "dtype": D, "rules": [...]}``:
  weightgen.write_model(..., from_transformers=True).
- ``{"kind": "cli", "args": [...]}``: weightgen's CLI in this process; exit code and stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's weightgen

import transformers

import weightgen
from weightgen.cli import main as cli_main


def spec(job: dict) -> dict:
    made = weightgen.model_spec(
        job["config"], dtype=job.get("dtype"), rules=job.get("rules"), from_transformers=True
    )
    return {"spec": made}


def write(job: dict) -> dict:
    weightgen.write_model(
        job["config"],
        job["folder"],
        dtype=job.get("dtype"),
        rules=job.get("rules"),
        from_transformers=True,
        max_shard_size=job.get("max_shard_size"),
    )
    return {}


def cli(job: dict) -> dict:
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli_main(job["args"])
        except SystemExit as exc:
            code = exc.code or 0
    return {"code": code, "stderr": err.getvalue()}


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    handlers = {"spec": spec, "write": write, "cli": cli}
    reports = []
    for job in jobs:
        try:
            reports.append({"ok": True, **handlers[job["kind"]](job)})
        except weightgen.WeightgenError as exc:
            reports.append({"ok": False, "error": str(exc), "code": exc.exit_code})
        except Exception as exc:  # reported, so the test names the job that failed
            reports.append({"ok": False, "error": f"{type(exc).__name__}: {exc}", "code": None})
    json.dump({"version": transformers.__version__, "reports": reports}, sys.stdout)


if __name__ == "__main__":
    main()
