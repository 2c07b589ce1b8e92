"""Qwen3 (Qwen3ForCausalLM): per-head q_norm and k_norm; head_dim defaults to 128, not
hidden_size // heads."""

from ..blocks import (
    KV_HEADS_DIVIDE_HEADS,
    attention,
    decoder_fields,
    embedding,
    final_norm,
    gated_mlp,
    layer_norms,
    lm_head,
    qk_norms,
)
from ..family import ONES, Family, Field, Head

FAMILY = Family(
    model_type="qwen3",
    heads=(Head("causal-lm", "Qwen3ForCausalLM"),),
    fields=(
        *decoder_fields(
            vocab=151936,
            hidden=4096,
            intermediate=22016,
            layers=32,
            heads=32,
            kv_heads=32,
            head_dim=128,
        ),
        Field("attention_bias", False, "bool"),
    ),
    checks=(KV_HEADS_DIVIDE_HEADS,),
    tensors=(
        *embedding(),
        *attention(qkv_bias=lambda c: c.attention_bias, o_bias=lambda c: c.attention_bias),
        *qk_norms(ONES, per_head=True),
        *gated_mlp(),
        *layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *final_norm(ONES),
        *lm_head(),
    ),
    rules="norms (q_norm, k_norm too) ones; biases (attention_bias) zeros",
)
