#!/usr/bin/env python3
"""Writes weightgen/hf/config_keys.json: which config.json keys transformers knows, per family.

weightgen reports a config key that its family neither reads nor passes through as a field
transformers knows, and names the field a near-miss meant (``num_layers`` for
``num_hidden_layers``). What transformers knows is read here from its own config classes, in
both pinned releases (5.24.0 from the venv, 4.57.6 from ``.venv/transformers4``), so that
transformers is not needed at run time:

- ``common``: the fields of ``PreTrainedConfig`` (``PretrainedConfig`` in 4.x), and the
  keys its constructor takes by name (``torch_dtype``, ``num_labels``, ...);
- ``families``: for each built-in family's ``model_type``, the config class's name and its
  fields (its constructor's parameters, ``to_dict()`` of a default instance, and its
  ``attribute_map``'s names), less the common ones;
- ``synonyms``: every ``attribute_map`` entry of every config class, as a pair of names of
  one field (GPT-2's ``num_hidden_layers`` and ``n_layer``, T5's ``hidden_size`` and
  ``d_model``).

Run from the repository root: ``.venv/bin/python scripts/gen_config_keys.py`` (``--out
PATH`` writes elsewhere).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "weightgen" / "hf" / "config_keys.json"
TRANSFORMERS4 = ROOT / ".venv" / "transformers4"
# Keys PreTrainedConfig's constructor reads from its keyword arguments rather than declaring
# (both releases): the legacy dtype name, the label count, and what save_pretrained or the Hub
# add (remote code's auto_map, a quantization_config).
READ_BY_NAME = (
    "torch_dtype",
    "num_labels",
    "auto_map",
    "quantization_config",
    "_name_or_path",
    "transformers_version",
)


def _fields(cls) -> set[str]:
    found = {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    with contextlib.suppress(Exception):  # a class that needs arguments: its signature is enough
        found |= set(cls().to_dict())
    found |= set(getattr(cls, "attribute_map", {}))
    return found


def dump(model_types: list[str]) -> dict:
    """What this interpreter's transformers knows (run once per release)."""
    import transformers
    from transformers import CONFIG_MAPPING

    base = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
    common = _fields(base)
    families = {}
    for model_type in model_types:
        if model_type not in CONFIG_MAPPING:
            continue
        cls = CONFIG_MAPPING[model_type]
        families[model_type] = {"class": cls.__name__, "keys": sorted(_fields(cls) - common)}
    synonyms = set()
    for model_type in CONFIG_MAPPING:
        try:
            cls = CONFIG_MAPPING[model_type]
        except Exception:  # a class that cannot be imported here
            continue
        for standard, other in getattr(cls, "attribute_map", {}).items():
            if isinstance(other, str) and other != standard:
                synonyms.add(tuple(sorted((standard, other))))
    return {
        "version": transformers.__version__,
        "common": sorted(common),
        "families": families,
        "synonyms": sorted(synonyms),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--dump":
        print(json.dumps(dump(sys.argv[2:])))
        return
    target = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--out" else OUT
    sys.path.insert(0, str(ROOT))
    from weightgen.hf import FAMILIES

    model_types = list(FAMILIES)
    runs = []
    for python_path in (None, TRANSFORMERS4):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if python_path is not None:
            env["PYTHONPATH"] = str(python_path)
        out = subprocess.run(
            [sys.executable, __file__, "--dump", *model_types],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(out))
    common = sorted(set().union(*(r["common"] for r in runs)) | set(READ_BY_NAME))
    families = {}
    for model_type in model_types:
        found = [r["families"][model_type] for r in runs if model_type in r["families"]]
        if not found:
            raise SystemExit(f"{model_type}: no config class in any pinned transformers")
        keys = set().union(*(f["keys"] for f in found)) - set(common)
        families[model_type] = {"class": found[0]["class"], "keys": sorted(keys)}
    synonyms = sorted({tuple(pair) for run in runs for pair in run["synonyms"]})
    document = {
        "generated_by": "scripts/gen_config_keys.py",
        "transformers": [r["version"] for r in runs],
        "common": common,
        "synonyms": [list(pair) for pair in synonyms],
        "families": families,
    }
    target.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(families)} families, {len(synonyms)} synonyms")


if __name__ == "__main__":
    main()
