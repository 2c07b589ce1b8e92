"""megatron-core's own initialisation of tiny GPT models, in megatron's own parameter names:
the oracle for ``--init megatron`` (tests/test_trainers.py). Checked against megatron-core
0.19.2 (its cp311 wheel) with torch 2.13.0 (CPU) on Python 3.11; every private name and
workaround the tests need is here.

    PYTHONPATH=.venv/trainers/megatron python tests/trainers/megatron_client.py JOBS.json

A job is {"label", "model": one of MODELS, "args": {sizes}, "seed"}: the sizes in the names
all three clients share (see titan_client.py); the test writes the Hugging Face config from
the same ones. Each model is a ``GPTModel`` with the
layer specs megatron's own pretrain_gpt.py takes without Transformer Engine
(``get_gpt_decoder_block_spec(config, use_transformer_engine=False)``: dense, MoE or MLA
layers as the config says), built with ``use_cpu_initialization=True`` in float32 after
``torch.manual_seed(seed)`` (megatron draws CPU master weights from torch's default
generator, ``tensor_parallel/layers.py`` ``_initialize_affine_weight_cpu``), in a one-process
gloo group with tensor and pipeline parallel size 1. ``init_method_std`` is left at its
default, 0.02, and everything else that sets an init (``init_method``,
``output_layer_init_method``, ``embedding_init_method``) too. A job whose sizes give
``mup_base`` builds it with ``use_mup=True, mup_base_hidden_size=mup_base`` (the oracle for
``--mup-base-width``).

A report: "tensors" {megatron name: stats (oracle.py)} for every parameter once (a tied
output layer is the embedding: megatron allocates no weight for it) and the persistent
floating-point buffers (the router's ``expert_bias``, transformers' e_score_correction_bias).

Workarounds, none of which touches a parameter's init:
- ``megatron/core/transformer/moe/ops/paged_stash.py`` does ``import triton`` at import
  (reached from ``import megatron.core`` through pipeline_parallel/schedules.py); its
  kernels run only in GPU training. A stand-in for that one module replaces it: a stand-in
  ``triton`` package does not work (torch._dynamo probes ``triton.language.dtype``).
- ``torch.cuda.current_device`` returns "cpu": MLA's rotary embedding
  (``multi_latent_attention.py``) and a TopKRouter with an expert bias (``router.py``) put a
  *buffer* (inv_freq; the zero expert_bias) there whatever ``use_cpu_initialization`` says.
- MLA with the local spec: megatron's own ``DotProductAttention`` does not take the
  ``k_channels``/``v_channels`` that ``MultiLatentAttention`` passes (only Transformer
  Engine's does); core attention holds no parameters, so a parameter-free stand-in takes
  its place.
- MoE layers use the "allgather" token dispatcher: "alltoall" makes a torch.cuda.Stream.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types

import oracle

CHECKED = "0.19.2"

# Each model, as megatron options: what an HF family of the same name is in megatron terms
# (Megatron Bridge's providers set the same ones).
MODELS = {
    # LayerNorm, biases on every linear, learned absolute positions, GeLU MLP.
    "gpt2": dict(normalization="LayerNorm", add_bias_linear=True, position="learned_absolute"),
    # RMSNorm, SwiGLU, per-head q/k RMSNorm, no biases, RoPE.
    "qwen3": dict(normalization="RMSNorm", glu=True, qk_layernorm=True),
    # qwen3 with every MLP a softmax top-k MoE.
    "qwen3_moe": dict(normalization="RMSNorm", glu=True, qk_layernorm=True, moe=True),
    # MLA (q_lora_rank or a full q projection), the first layers dense, then a sigmoid MoE
    # with an expert bias (aux-loss-free balancing) and shared experts.
    "deepseek_v3": dict(
        normalization="RMSNorm",
        glu=True,
        qk_layernorm=True,
        moe=True,
        mla=True,
        expert_bias=True,
        shared=True,
    ),
    # q/k/v biases; every MLP an MoE with a shared expert behind a sigmoid gate.
    "qwen2_moe": dict(
        normalization="RMSNorm", glu=True, qkv_bias=True, moe=True, shared=True, shared_gate=True
    ),
    # biases on every linear (the router's too), SwiGLU MoE experts with biases.
    "gpt_oss": dict(normalization="RMSNorm", glu=True, add_bias_linear=True, moe=True),
}


def stub_paged_stash() -> None:
    name = "megatron.core.transformer.moe.ops.paged_stash"
    module = types.ModuleType(name)
    module.GLOBAL_BLOCK_SIZE = 1024
    module.paged_stash_copy_kernel = None
    module.paged_stash_pop_kernel = None
    sys.modules[name] = module


def start_parallel_state(folder: str) -> None:
    """A one-process gloo group and model-parallel state of size 1 (what megatron's layers
    ask for at construction)."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    torch.cuda.current_device = lambda: "cpu"  # see the module docstring
    if not dist.is_initialized():
        store = os.path.join(folder, "gloo")
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(1, 1)


def build(model: str, a: dict):
    import torch
    import torch.nn.functional as F
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
    from megatron.core.transformer.transformer_config import (
        MLATransformerConfig,
        TransformerConfig,
    )

    o = MODELS[model]
    options = dict(
        num_layers=a["layers"],
        hidden_size=a["hidden"],
        num_attention_heads=a["heads"],
        num_query_groups=a.get("kv_heads", a["heads"]),
        ffn_hidden_size=a["ffn"],
        normalization=o["normalization"],
        add_bias_linear=o.get("add_bias_linear", False),
        add_qkv_bias=o.get("qkv_bias", False),
        gated_linear_unit=o.get("glu", False),
        activation_func=F.silu if o.get("glu") else F.gelu,
        qk_layernorm=o.get("qk_layernorm", False),
        use_cpu_initialization=True,
        params_dtype=torch.float32,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    if "head_dim" in a:
        options["kv_channels"] = a["head_dim"]
    if "mup_base" in a:  # μP: TransformerConfig.__post_init__ scales the init methods
        options.update(use_mup=True, mup_base_hidden_size=a["mup_base"])
    if o.get("moe"):
        dense = a.get("dense_layers", 0)
        options.update(
            num_moe_experts=a["experts"],
            moe_router_topk=a["top_k"],
            moe_ffn_hidden_size=a["expert_ffn"],
            moe_layer_freq=[0] * dense + [1] * (a["layers"] - dense),
            moe_token_dispatcher_type="allgather",  # see the module docstring
            moe_grouped_gemm=False,  # SequentialMLP: one MLP per expert, CPU-built
        )
    if o.get("expert_bias"):
        options.update(moe_router_score_function="sigmoid", moe_router_enable_expert_bias=True)
    if o.get("shared"):
        options["moe_shared_expert_intermediate_size"] = a["shared_experts"] * a["expert_ffn"]
        options["moe_shared_expert_gate"] = o.get("shared_gate", False)
    if o.get("mla"):
        config = MLATransformerConfig(
            **options,
            q_lora_rank=a["q_lora_rank"],
            kv_lora_rank=a["kv_lora_rank"],
            qk_head_dim=a["qk_nope_head_dim"],
            qk_pos_emb_head_dim=a["qk_rope_head_dim"],
            v_head_dim=a["v_head_dim"],
            rope_type="rope",  # "yarn" (the default) also asks for the current CUDA device
        )
    else:
        config = TransformerConfig(**options)
    block = get_gpt_decoder_block_spec(
        config, use_transformer_engine=False, normalization=o["normalization"]
    )
    if o.get("mla"):

        class NoCoreAttention(torch.nn.Module):  # see the module docstring
            def __init__(self, *args, **kwargs):
                super().__init__()

        for layer in block.layer_specs:
            layer.submodules.self_attention.submodules.core_attention = NoCoreAttention
    return GPTModel(
        config=config,
        transformer_layer_spec=block,
        vocab_size=a["vocab"],
        max_sequence_length=a.get("positions", 256),
        position_embedding_type=o.get("position", "rope"),
        share_embeddings_and_output_weights=a["tied"],
    )


def report(model) -> dict:
    tensors = {}
    for name, p in model.named_parameters():  # each shared parameter once
        tensors[name] = oracle.stats(p)
    saved = set(model.state_dict())
    for name, b in model.named_buffers():
        if name in saved and b.is_floating_point() and b.numel():
            tensors[name] = oracle.stats(b)
    return {"tensors": tensors}


def run(job: dict) -> dict:
    import torch

    torch.manual_seed(job.get("seed", 0))
    model = build(job["model"], job["args"])
    return report(model)


if __name__ == "__main__":
    # megatron/core/package_info.py otherwise runs git in its own folder at import and adds
    # the commit of whatever repository holds it (here: weightgen's) to __version__.
    os.environ["NO_VCS_VERSION"] = "1"
    stub_paged_stash()
    from importlib.metadata import version

    installed = version("megatron-core")
    oracle.check_version("megatron-core", installed, CHECKED)
    with tempfile.TemporaryDirectory() as folder:
        start_parallel_state(folder)
        oracle.main("megatron-core", installed, run)
        import torch.distributed as dist

        dist.destroy_process_group()
