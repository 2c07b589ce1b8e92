"""Qwen3 (Qwen3ForCausalLM): per-head q_norm and k_norm; head_dim defaults to 128, not
hidden_size // heads."""

from .. import blocks
from ..family import ONES, Family, Field, Head

FAMILY = Family(
    model_type="qwen3",
    heads=(Head("causal-lm", "Qwen3ForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
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
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=blocks.decoder(
        ONES, qkv_bias=blocks.ATTENTION_BIAS, o_bias=blocks.ATTENTION_BIAS, qk_norms="head"
    ),
    rules="norms (q_norm, k_norm too) ones; biases (attention_bias) zeros",
)
