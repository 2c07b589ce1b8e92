"""Gemma 3, text only (Gemma3ForCausalLM with a Gemma3TextConfig): Gemma 2's layout plus
per-head q_norm and k_norm; every norm zero-initialised."""

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
    qk_norms,
)
from ..family import ZEROS, Family, Field, Head
from .gemma2 import NORMS

FAMILY = Family(
    model_type="gemma3_text",
    heads=(Head("causal-lm", "Gemma3ForCausalLM"),),
    fields=(
        *decoder_fields(
            vocab=262208,
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
        *qk_norms(ZEROS, per_head=True),
        *gated_mlp(),
        *layer_norms(ZEROS, *NORMS),
        *final_norm(ZEROS),
        *lm_head(),
    ),
    rules="norms (q_norm, k_norm too) **zeros** (x * (1 + w)); biases (attention_bias) zeros",
)
