"""Llama (LlamaForCausalLM): transformers' reference decoder layout."""

from .. import blocks
from ..family import ONES, Family, Field, Head

FAMILY = Family(
    model_type="llama",
    heads=(Head("causal-lm", "LlamaForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=32000, hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=None
        ),
        Field("attention_bias", False, "bool"),  # q, k, v and o biases
        Field("mlp_bias", False, "bool"),
    ),
    # transformers 5.x requires the first even with an explicit head_dim.
    checks=(blocks.HEADS_DIVIDE_HIDDEN, blocks.KV_HEADS_DIVIDE_HEADS),
    tensors=blocks.decoder(
        ONES,
        qkv_bias=lambda c: c.attention_bias,
        o_bias=lambda c: c.attention_bias,
        mlp_bias=lambda c: c.mlp_bias,
    ),
    rules="norms ones; biases (attention_bias, mlp_bias) zeros",
)
