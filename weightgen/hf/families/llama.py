"""Llama (LlamaForCausalLM): transformers' reference decoder layout."""

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
from ..family import ONES, Family, Field, Head

FAMILY = Family(
    model_type="llama",
    heads=(Head("causal-lm", "LlamaForCausalLM"),),
    fields=(
        *decoder_fields(
            vocab=32000, hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=None
        ),
        Field("attention_bias", False, "bool"),  # q, k, v and o biases
        Field("mlp_bias", False, "bool"),
    ),
    # transformers 5.x requires the first even with an explicit head_dim.
    checks=(HEADS_DIVIDE_HIDDEN, KV_HEADS_DIVIDE_HEADS),
    tensors=(
        *embedding(),
        *attention(qkv_bias=lambda c: c.attention_bias, o_bias=lambda c: c.attention_bias),
        *gated_mlp(bias=lambda c: c.mlp_bias),
        *layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *final_norm(ONES),
        *lm_head(),
    ),
    rules="norms ones; biases (attention_bias, mlp_bias) zeros",
)
