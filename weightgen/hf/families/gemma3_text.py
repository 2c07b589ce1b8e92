"""Gemma 3, text only (Gemma3ForCausalLM with a Gemma3TextConfig): Gemma 2's layout plus
per-head q_norm and k_norm; every norm zero-initialised."""

from .. import blocks
from ..family import ZEROS, Family, Field, Head
from .gemma2 import NORMS

FAMILY = Family(
    model_type="gemma3_text",
    heads=(Head("causal-lm", "Gemma3ForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
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
    checks=(blocks.HEADS_DIVIDE_HIDDEN, blocks.KV_HEADS_DIVIDE_HEADS),
    tensors=blocks.decoder(
        ZEROS,
        qkv_bias=blocks.ATTENTION_BIAS,
        o_bias=blocks.ATTENTION_BIAS,
        qk_norms="head",
        norms=NORMS,
    ),
    rules="norms (q_norm, k_norm too) **zeros** (x * (1 + w)); biases (attention_bias) zeros",
)
