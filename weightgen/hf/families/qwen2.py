"""Qwen2 (Qwen2ForCausalLM): q, k and v always carry a bias, o never (attention_bias is
ignored by the model code)."""

from ..blocks import (
    KV_HEADS_DIVIDE_HEADS,
    attention,
    decoder_fields,
    embedding,
    final_norm,
    gated_mlp,
    layer_norms,
    lm_head,
)
from ..family import ONES, Family, Head

FAMILY = Family(
    model_type="qwen2",
    heads=(Head("causal-lm", "Qwen2ForCausalLM"),),
    fields=decoder_fields(
        vocab=151936, hidden=4096, intermediate=22016, layers=32, heads=32, kv_heads=32
    ),
    checks=(KV_HEADS_DIVIDE_HEADS,),
    tensors=(
        *embedding(),
        *attention(qkv_bias=lambda c: True),
        *gated_mlp(),
        *layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *final_norm(ONES),
        *lm_head(),
    ),
    rules="norms ones; q/k/v biases (always present) zeros",
)
