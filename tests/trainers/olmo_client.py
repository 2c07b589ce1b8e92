"""OLMo-core's own initialisation of tiny transformers, in OLMo-core's own parameter names:
the oracle for ``--init olmo2`` (tests/test_trainers.py). Checked against ai2-olmo-core
3.0.0 with torch 2.13.0 (CPU) on Python 3.11; every private name and workaround the tests
need is here.

    PYTHONPATH=.venv/trainers/olmo python tests/trainers/olmo_client.py JOBS.json

A job is {"label", "model": "olmo2" | "olmoe", "args": {sizes}, "seed"}: the sizes in the
names all three clients share (see titan_client.py); the test writes the Hugging Face config
from the same ones. The models come from
OLMo-core's own builders (``olmo_core/nn/transformer/config.py``), with the init they leave
at its default, what every released OLMo 2 and OLMo 3 run uses (their official scripts in
``src/scripts/official`` pass no init argument): ``init_method=InitMethod.normal``,
``init_std=0.02``, untied unless the job says so. ``cfg.build(init_device="cpu")`` then
``model.init_weights()``, as the trainer does, in float32; ``init_seed`` is the job's seed.

- "olmo2": ``TransformerConfig.olmo2_30M`` (d_model 256: reordered norms, q/k norm over the
  full width). ``tie_word_embeddings`` from the job.
- "olmoe": ``TransformerConfig.olmoe_1B_7B`` at the job's width and depth, then, so that it
  matches a Hugging Face qwen3_moe of the same sizes, its expert count, top-k and expert
  width from the job and q/k norms per head (``use_head_qk_norm``): none of these changes
  which init a parameter gets. The builder does not forward its keyword arguments to
  ``llama_like``, so these are set on the config it returns.

A report: "tensors" {OLMo-core name: stats (oracle.py)} for every parameter once (a tied
head is the embedding), plus the persistent floating-point buffers other than RoPE's.

Workaround, touching no parameter: olmo_core/config.py and io.py import ``cached_path`` at
import, which imports google-cloud-storage and boto3. Building and initialising a model
reads no remote file, so a stand-in that raises if called takes its place (it is not
installed).
"""

from __future__ import annotations

import sys
import types

import oracle

CHECKED = "3.0.0"


def stub_cached_path() -> None:
    package = types.ModuleType("cached_path")

    def no_remote_io(*args, **kwargs):
        raise RuntimeError("cached_path is a stand-in in the OLMo-core oracle")

    package.cached_path = no_remote_io
    schemes = types.ModuleType("cached_path.schemes")

    class SchemeClient:
        pass

    class S3Client(SchemeClient):
        recoverable_errors = ()

    schemes.SchemeClient = SchemeClient
    schemes.S3Client = S3Client
    schemes.add_scheme_client = lambda cls: None
    package.schemes = schemes
    sys.modules["cached_path"] = package
    sys.modules["cached_path.schemes"] = schemes


def build(model: str, a: dict, seed: int):
    import torch
    from olmo_core.nn.transformer import TransformerConfig

    if model == "olmo2":
        config = TransformerConfig.olmo2_30M(
            vocab_size=a["vocab"],
            n_layers=a["layers"],
            n_heads=a["heads"],
            tie_word_embeddings=a["tied"],
            init_seed=seed,
        )
    elif model == "olmoe":
        config = TransformerConfig.olmoe_1B_7B(
            vocab_size=a["vocab"], d_model=a["hidden"], n_layers=a["layers"], n_heads=a["heads"]
        )
        config.init_seed = seed
        moe = config.block.feed_forward_moe
        moe.num_experts, moe.hidden_size = a["experts"], a["expert_ffn"]
        moe.router.top_k = a["top_k"]
        config.block.sequence_mixer.use_head_qk_norm = True
    else:
        raise ValueError(f"unknown model {model!r}")
    if config.d_model != a["hidden"]:
        raise ValueError(f"{model} has d_model {config.d_model}, the job asks for {a['hidden']}")
    ffn = config.block.feed_forward
    if ffn is not None and ffn.hidden_size != a["ffn"]:
        raise ValueError(f"{model} has a feed-forward width {ffn.hidden_size}, not {a['ffn']}")
    torch.manual_seed(seed)  # nothing here draws from it; as a guard
    built = config.build(init_device="cpu")
    built.init_weights(device=torch.device("cpu"))
    return built


def run(job: dict) -> dict:
    model = build(job["model"], job["args"], job.get("seed", 0))
    tensors = {name: oracle.stats(p) for name, p in model.named_parameters()}
    saved = set(model.state_dict())
    for name, b in model.named_buffers():
        if name in saved and b.is_floating_point() and b.numel() and "rope" not in name:
            tensors[name] = oracle.stats(b)
    return {"tensors": tensors}


if __name__ == "__main__":
    stub_cached_path()
    from importlib.metadata import version

    installed = version("ai2-olmo-core")
    oracle.check_version("ai2-olmo-core", installed, CHECKED)
    oracle.main("ai2-olmo-core", installed, run)
