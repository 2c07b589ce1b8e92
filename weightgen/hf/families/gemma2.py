"""Gemma 2 (Gemma2ForCausalLM): Gemma's layout with norms before and after the MLP too
(four per layer, all zero-initialised)."""

from ..blocks import (
    HEADS_DIVIDE_HIDDEN,
    KV_HEADS_DIVIDE_HEADS,
    attention,
    decoder_fields,
    embedding,
    final_norm,
    gated_mlp,
    layer_norms,
    lm_head,
)
from ..family import ZEROS, Family, Field, Head

NORMS = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)

FAMILY = Family(
    model_type="gemma2",
    heads=(Head("causal-lm", "Gemma2ForCausalLM"),),
    fields=(
        *decoder_fields(
            vocab=256000,
            hidden=2304,
            intermediate=9216,
            layers=26,
            heads=8,
            kv_heads=4,
            head_dim=256,
            tie=True,
            pad=0,
        ),
        Field("attention_bias", False, "bool"),
    ),
    checks=(HEADS_DIVIDE_HIDDEN, KV_HEADS_DIVIDE_HEADS),
    tensors=(
        *embedding(),
        *attention(qkv_bias=lambda c: c.attention_bias, o_bias=lambda c: c.attention_bias),
        *gated_mlp(),
        *layer_norms(ZEROS, *NORMS),
        *final_norm(ZEROS),
        *lm_head(),
    ),
    rules="norms **zeros** (x * (1 + w)); biases (attention_bias) zeros",
)
