"""torchtitan's own initialisation of tiny models, in Hugging Face tensor names: the oracle
for ``--init torchtitan`` (tests/test_trainers.py). Checked against torchtitan 0.3.0 with
torch 2.13.0 (CPU) on Python 3.11; every private name of torchtitan the tests use is here.

    PYTHONPATH=.venv/trainers/torchtitan python tests/trainers/titan_client.py JOBS.json

A job is {"label", "model": "llama3" | "qwen3" | "deepseek_v3" | "gpt_oss", "args": {...},
"seed"}: the sizes, in the names all three clients share (hidden, layers, vocab, heads,
kv_heads, head_dim, ffn, tied, experts, top_k, expert_ffn, shared_experts, dense_layers, and
MLA's q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim); the test
writes the Hugging Face config from the same ones. Each model is put together from
torchtitan's own per-model config helpers, the ones its flavors
(``torchtitan/models/<model>/__init__.py``) use, with their own ``param_init`` tables; built
on CPU in float32 after ``torch.manual_seed(seed)``; then ``init_weights()``, what
trainer.py runs (also for ``--checkpoint.create_seed_checkpoint``). The state dict goes
through the model's own state-dict adapter (``to_hf``), the one that
``--checkpoint.initial_load_in_hf`` loads a Hugging Face folder through, so each tensor is
reported under the name weightgen writes.

A report: "tensors" {HF name: stats (oracle.py)}, and "dropped" {torchtitan name: stats}
for the persistent entries ``to_hf`` leaves out (the MoE load-balancing buffer
``expert_bias_E`` of qwen3 and gpt_oss; a tied lm_head, which is the embedding).

gpt_oss: torchtitan 0.3.0's adapter maps the experts under names the module does not have
(``inner_experts.mlp1_weight`` against the module's ``mlp1_weight_EGD``, ...), so ``to_hf``
drops all four expert tensors of every layer (and torchtitan would keep its own init for
them when loading a folder). They are reported under the Hugging Face names they stand for
(EXPERTS below), their layouts transposed ([E, 2I, D] for HF's [E, D, 2I]); the statistics
compared do not depend on the layout.
"""

from __future__ import annotations

import re
import sys
import types

import oracle

CHECKED = "0.3.0"

# torchtitan's gpt_oss expert parameters -> the Hugging Face tensors they stand for.
EXPERTS = {
    "mlp1_weight_EGD": "experts.gate_up_proj",
    "mlp1_bias_EG": "experts.gate_up_proj_bias",
    "mlp2_weight_EDF": "experts.down_proj",
    "mlp2_bias_ED": "experts.down_proj_bias",
}
EXPERT_NAME = re.compile(r"layers\.(\d+)\.moe\.routed_experts\.inner_experts\.(\w+)$")


def stub_triton_kernels() -> None:
    """torchtitan 0.3.0 imports a Triton kernel module when it is imported
    (models.common.token_dispatcher -> distributed.minimal_async_ep.api -> .kernels, which
    does ``import triton``); only GPU expert-parallel dispatch calls those kernels. A stand-in
    for that one module, whose kernels raise if called, lets the CPU oracle run without
    Triton (999 MB). A stand-in for ``triton`` itself does not work: torch._inductor then
    believes Triton is installed and imports its backends."""
    name = "torchtitan.distributed.minimal_async_ep.kernels"
    module = types.ModuleType(name)

    def unavailable(*args, **kwargs):
        raise RuntimeError("Triton kernels are not available in the CPU oracle")

    for kernel in (
        "copy_full_counts_to_peers_kernel",
        "copy_rows_to_peers_kernel",
        "expand_topk_grad_kernel",
        "fill_combine_metadata_kernel",
        "fill_dispatch_metadata_kernel",
        "invert_flat_indices_kernel",
        "reduce_topk_slots_kernel",
        "topk_scores_grad_kernel",
    ):
        setattr(module, kernel, unavailable)
    sys.modules[name] = module


def llama3(a: dict):
    """As the flavors of models/llama3/__init__.py: _build_llama3_layers (q/k/v and w1
    _LINEAR_INIT, wo, w2 and w3 _depth_init), _EMBEDDING_INIT (or _EMBEDDING_SKIP_INIT when
    tied, as the 1B and 3B flavors), _output_linear_init(dim) for the head."""
    from torchtitan.models import llama3 as m
    from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm

    dim, vocab, tied = a["hidden"], a["vocab"], a["tied"]
    config = m.Llama3Model.Config(
        dim=dim,
        vocab_size=vocab,
        enable_weight_tying=tied,
        tok_embeddings=Embedding.Config(
            num_embeddings=vocab,
            embedding_dim=dim,
            param_init=m._EMBEDDING_SKIP_INIT if tied else m._EMBEDDING_INIT,
        ),
        norm=RMSNorm.Config(normalized_shape=dim, param_init=m._NORM_INIT),
        lm_head=Linear.Config(
            in_features=dim, out_features=vocab, param_init=m._output_linear_init(dim)
        ),
        layers=m._build_llama3_layers(
            n_layers=a["layers"],
            dim=dim,
            n_heads=a["heads"],
            n_kv_heads=a["kv_heads"],
            hidden_dim=a["ffn"],
            rope=ComplexRoPE.Config(
                dim=dim // a["heads"], max_seq_len=256, theta=500000.0, scaling="llama"
            ),
            attn_backend="flex",
        ),
    )
    return config, m.Llama3StateDictAdapter


def qwen3(a: dict):
    """As models/qwen3/__init__.py: _build_qwen3_layers (dense) or, given experts,
    _build_qwen3_moe_layers (every layer sparse); _EMBEDDING_INIT (_EMBEDDING_SKIP_INIT when
    tied), _LINEAR_INIT for the head, _qwen3_norm."""
    from torchtitan.models import qwen3 as m
    from torchtitan.models.common import CosSinRoPE, Embedding, Linear

    dim, vocab, tied = a["hidden"], a["vocab"], a["tied"]
    common = dict(
        n_layers=a["layers"],
        dim=dim,
        n_heads=a["heads"],
        n_kv_heads=a["kv_heads"],
        head_dim=a["head_dim"],
        attn_backend="flex",
        rope=CosSinRoPE.Config(dim=a["head_dim"], max_seq_len=256, theta=1000000.0),
    )
    if a.get("experts"):
        layers = m._build_qwen3_moe_layers(
            **common,
            moe_hidden_dim=a["expert_ffn"],
            num_experts=a["experts"],
            top_k=a["top_k"],
            moe_comm_backend="standard",
        )
    else:
        layers = m._build_qwen3_layers(**common, hidden_dim=a["ffn"])
    config = m.Qwen3Model.Config(
        vocab_size=vocab,
        dim=dim,
        norm=m._qwen3_norm(dim),
        enable_weight_tying=tied,
        tok_embeddings=Embedding.Config(
            num_embeddings=vocab,
            embedding_dim=dim,
            param_init=m._EMBEDDING_SKIP_INIT if tied else m._EMBEDDING_INIT,
        ),
        lm_head=Linear.Config(in_features=dim, out_features=vocab, param_init=m._LINEAR_INIT),
        layers=layers,
    )
    return config, m.Qwen3StateDictAdapter


def deepseek_v3(a: dict):
    """As models/deepseek_v3/__init__.py: _build_dsv3_layers (MLA, n_dense_layers dense
    layers, then MoE with shared experts), _EMBEDDING_INIT, _output_linear_init(dim); no
    multi-token-prediction layers (the default, and transformers builds none)."""
    from torchtitan.models import deepseek_v3 as m
    from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm

    dim, vocab = a["hidden"], a["vocab"]
    layers = m._build_dsv3_layers(
        n_layers=a["layers"],
        n_dense_layers=a["dense_layers"],
        dim=dim,
        n_heads=a["heads"],
        q_lora_rank=a["q_lora_rank"] or 0,  # torchtitan's "no low-rank q" is 0
        kv_lora_rank=a["kv_lora_rank"],
        qk_nope_head_dim=a["qk_nope_head_dim"],
        qk_rope_head_dim=a["qk_rope_head_dim"],
        v_head_dim=a["v_head_dim"],
        mscale=1.0,
        dense_hidden_dim=a["ffn"],
        moe_hidden_dim=a["expert_ffn"],
        num_experts=a["experts"],
        num_shared_experts=a["shared_experts"],
        router_top_k=a["top_k"],
        router_score_func="sigmoid",
        attn_backend="flex",
        moe_comm_backend="standard",
        non_blocking_capacity_factor=None,
        rope=ComplexRoPE.Config(dim=a["qk_rope_head_dim"], max_seq_len=256, theta=10000.0),
    )
    config = m.DeepSeekV3Model.Config(
        vocab_size=vocab,
        dim=dim,
        tok_embeddings=Embedding.Config(
            num_embeddings=vocab, embedding_dim=dim, param_init=m._EMBEDDING_INIT
        ),
        norm=RMSNorm.Config(normalized_shape=dim, param_init=m._NORM_INIT),
        lm_head=Linear.Config(
            in_features=dim, out_features=vocab, param_init=m._output_linear_init(dim)
        ),
        layers=layers,
        mtp_layers=[],
    )
    return config, m.DeepSeekV3StateDictAdapter


def gpt_oss(a: dict):
    """As models/gpt_oss/__init__.py _build_gptoss_layers, line for line, except that the
    head counts and head_dim are passed to _make_gptoss_attn_config (the flavors take its
    defaults 64/8/64, too wide for a tiny model); _EMBEDDING_INIT, _output_linear_init(dim)."""
    from torchtitan.models import gpt_oss as m
    from torchtitan.models.common import CosSinRoPE, Embedding, Linear, RMSNorm
    from torchtitan.models.common.moe import TokenChoiceTopKRouter

    dim, vocab, experts = a["hidden"], a["vocab"], a["experts"]
    rope = CosSinRoPE.Config(dim=a["head_dim"], max_seq_len=256, theta=150000.0)
    layers = []
    for layer_id in range(a["layers"]):
        attention = m._make_gptoss_attn_config(
            dim=dim,
            layer_id=layer_id,
            attn_backend="flex",
            n_heads=a["heads"],
            n_kv_heads=a["kv_heads"],
            head_dim=a["head_dim"],
            sliding_window_size=128 if layer_id % 2 == 0 else None,
            rope=rope,
        )
        routed = m._make_gptoss_experts_config(
            dim=dim,
            hidden_dim=a["expert_ffn"],
            num_experts=experts,
            layer_id=layer_id,
            top_k=a["top_k"],
            moe_comm_backend="standard",
        )
        router = TokenChoiceTopKRouter.Config(
            num_experts=experts,
            score_func="softmax",
            route_norm=True,
            top_k=a["top_k"],
            gate=Linear.Config(
                in_features=dim,
                out_features=experts,
                bias=True,
                param_init=m._depth_init(layer_id),
            ),
        )
        layers.append(
            m.GptOssTransformerBlock.Config(
                attention=attention,
                attention_norm=RMSNorm.Config(normalized_shape=dim, param_init=m._NORM_INIT),
                ffn_norm=RMSNorm.Config(normalized_shape=dim, param_init=m._NORM_INIT),
                moe=m.GptOssMoE.Config(
                    num_experts=experts,
                    load_balance_coeff=1e-3,
                    routed_experts=routed,
                    router=router,
                ),
            )
        )
    config = m.GptOssModel.Config(
        vocab_size=vocab,
        dim=dim,
        tok_embeddings=Embedding.Config(
            num_embeddings=vocab, embedding_dim=dim, param_init=m._EMBEDDING_INIT
        ),
        norm=RMSNorm.Config(normalized_shape=dim, param_init=m._NORM_INIT),
        lm_head=Linear.Config(
            in_features=dim, out_features=vocab, param_init=m._output_linear_init(dim)
        ),
        layers=layers,
    )
    return config, m.GptOssStateDictAdapter


MODELS = {"llama3": llama3, "qwen3": qwen3, "deepseek_v3": deepseek_v3, "gpt_oss": gpt_oss}


def run(job: dict) -> dict:
    import torch

    config, adapter_class = MODELS[job["model"]](job["args"])
    torch.manual_seed(job.get("seed", 0))
    with torch.device("cpu"):
        model = config.build()
    with torch.no_grad():
        model.init_weights()
    state = model.state_dict()  # FusedQKVLinear's hook splits wqkv into wq, wk, wv here
    adapter = adapter_class(config, None)
    tensors = {name: oracle.stats(t) for name, t in adapter.to_hf(dict(state)).items()}
    dropped = {}
    for name, t in state.items():
        found = EXPERT_NAME.search(name) if job["model"] == "gpt_oss" else None
        if found and found.group(2) in EXPERTS:
            hf_name = f"model.layers.{found.group(1)}.mlp.{EXPERTS[found.group(2)]}"
            tensors[hf_name] = oracle.stats(t)
        elif not adapter.to_hf({name: t}):  # the adapter has no Hugging Face name for it
            dropped[name] = oracle.stats(t)
    return {"tensors": tensors, "dropped": dropped}


if __name__ == "__main__":
    stub_triton_kernels()
    from importlib.metadata import version

    installed = version("torchtitan")
    oracle.check_version("torchtitan", installed, CHECKED)
    oracle.main("torchtitan", installed, run)
