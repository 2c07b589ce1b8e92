"""Qwen2 (Qwen2ForCausalLM): q, k and v always carry a bias, o never (attention_bias is
ignored by the model code)."""

from .. import blocks
from ..family import ONES, Family, Head

FAMILY = Family(
    model_type="qwen2",
    heads=(Head("causal-lm", "Qwen2ForCausalLM"),),
    fields=blocks.decoder_fields(
        vocab=151936, hidden=4096, intermediate=22016, layers=32, heads=32, kv_heads=32
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=blocks.decoder(ONES, qkv_bias=lambda c: True),
    rules="norms ones; q/k/v biases (always present) zeros",
)
