"""Haliax's own layers, initialised with the keys weightgen gives the same tensors: the
oracle for ``--init levanter`` (tests/test_jax_recipes.py). Checked against haliax
1.4.dev453 with jax 0.10.2 (CPU) on Python 3.11.

    PYTHONPATH=.venv/trainers/haliax python tests/trainers/haliax_client.py JOBS.json

A job is {"label", "layer": "linear" | "moe_linear" | "embedding", "in": {axis: size},
"out": {axis: size}, "experts": E (moe_linear), "seed", "fold"}: the layer built as Levanter's
model code builds it (``hnn.Linear.init(In, Out, key, use_bias=False, out_first=True)``,
``hnn.MoELinear.init(Experts, In, Out, ...)``, ``hnn.Embedding.init(Vocab, Embed, key)``, at
their default init_scale), with the key ``jax.random.fold_in(jax.random.key(seed), fold)``:
weightgen's key rule for a tensor of that name. A report: the weight's sha256 in float32 as
stored by the layer (out_first: torch's [out..., in...], the layout of the folder once the
axes are flattened), its shape, and its stats (oracle.py's). An MoELinear weight is
[E, out, in]: drawn from one key for all experts, where weightgen draws each expert's
tensor from its own, so only its statistics compare.

Nothing here is stubbed: haliax imports aqt (and so flax) at import time; both are
installed beside it.
"""

from __future__ import annotations

import hashlib

import oracle

CHECKED = "1.4.dev453"


def axes(sizes: dict):
    import haliax as hax

    return tuple(hax.Axis(name, size) for name, size in sizes.items())


def build(job: dict):
    import haliax as hax
    import haliax.nn as hnn
    import jax

    key = jax.random.fold_in(jax.random.key(job["seed"]), job["fold"])
    In, Out = axes(job["in"]), axes(job["out"])
    In = In[0] if len(In) == 1 else In
    Out = Out[0] if len(Out) == 1 else Out
    if job["layer"] == "linear":
        return hnn.Linear.init(In=In, Out=Out, key=key, use_bias=False, out_first=True).weight
    if job["layer"] == "moe_linear":
        experts = hax.Axis("experts", job["experts"])
        return hnn.MoELinear.init(
            Experts=experts, In=In, Out=Out, key=key, use_bias=False, out_first=True
        ).weight
    if job["layer"] == "embedding":
        return hnn.Embedding.init(Out, In, key=key).weight  # Vocab, Embed
    raise ValueError(f"unknown layer {job['layer']!r}")


def run(job: dict) -> dict:
    import numpy as np
    import torch

    weight = np.asarray(build(job).array)
    return {
        "shape": list(weight.shape),
        "dtype": str(weight.dtype),
        "sha256": hashlib.sha256(np.ascontiguousarray(weight).tobytes()).hexdigest(),
        "stats": oracle.stats(torch.from_numpy(weight.copy())),
    }


if __name__ == "__main__":
    from importlib.metadata import version

    installed = version("haliax")
    oracle.check_version("haliax", installed, CHECKED)
    oracle.main("haliax", installed, run)
