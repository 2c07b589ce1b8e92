"""Gemma 2 (Gemma2ForCausalLM): Gemma's layout with norms before and after the MLP too
(four per layer, all zero-initialised)."""

from .. import blocks
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
        *blocks.decoder_fields(
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
    checks=(blocks.HEADS_DIVIDE_HIDDEN, blocks.KV_HEADS_DIVIDE_HEADS),
    tensors=blocks.decoder(
        ZEROS, qkv_bias=blocks.ATTENTION_BIAS, o_bias=blocks.ATTENTION_BIAS, norms=NORMS
    ),
    rules="norms **zeros** (x * (1 + w)); biases (attention_bias) zeros",
)
