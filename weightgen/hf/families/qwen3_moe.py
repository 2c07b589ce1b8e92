"""Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3's attention; layer i is sparse (a router and
num_experts experts of moe_intermediate_size, one tensor per expert) unless it is in
mlp_only_layers or (i + 1) is not a multiple of decoder_sparse_step, then a dense MLP."""

from .. import blocks
from ..family import ONES, Family, Field, Head


def sparse(c, i: int) -> bool:
    dense_layers = c.__dict__.setdefault("_dense_layers", frozenset(c.mlp_only_layers))
    return i not in dense_layers and (i + 1) % c.decoder_sparse_step == 0


def dense(c, i: int) -> bool:
    return not sparse(c, i)


def moe_fields(
    *, experts: int, per_token: int, width: int, shared: int | None = None
) -> tuple[Field, ...]:
    """The Qwen MoE fields with a family's defaults (``shared``: a shared expert's width).
    transformers 4.x reads num_experts only (5.x writes num_local_experts, which 4.x ignores,
    falling back to its default): weightgen writes num_experts."""
    return (
        Field("num_experts", experts, high=100_000),
        Field("num_experts_per_tok", per_token, high=100_000),
        Field("moe_intermediate_size", width),
        *([Field("shared_expert_intermediate_size", shared)] if shared is not None else []),
        Field("decoder_sparse_step", 1),
        Field("mlp_only_layers", [], "ints"),
    )


FAMILY = Family(
    model_type="qwen3_moe",
    heads=(Head("causal-lm", "Qwen3MoeForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=151936, hidden=2048, intermediate=6144, layers=24, heads=32, kv_heads=4
        ),
        Field("attention_bias", False, "bool"),
        *moe_fields(experts=128, per_token=8, width=768),
    ),
    checks=(
        blocks.KV_HEADS_DIVIDE_HEADS,
        blocks.experts_fit(),
    ),
    experts="num_experts",
    tensors=blocks.decoder(
        ONES,
        qkv_bias=blocks.ATTENTION_BIAS,
        o_bias=blocks.ATTENTION_BIAS,
        qk_norms="head",
        mlp=(
            *blocks.routed_experts(layer_when=sparse),
            *blocks.gated_mlp(layer_when=dense),
        ),
    ),
    rules="norms (q_norm, k_norm too) ones; router and experts normal; biases zeros",
)
