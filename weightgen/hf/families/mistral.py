"""Mistral (MistralForCausalLM): the Llama layout without any bias."""

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
    model_type="mistral",
    heads=(Head("causal-lm", "MistralForCausalLM"),),
    fields=decoder_fields(
        vocab=32000, hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8
    ),
    checks=(KV_HEADS_DIVIDE_HEADS,),
    tensors=(
        *embedding(),
        *attention(),
        *gated_mlp(),
        *layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *final_norm(ONES),
        *lm_head(),
    ),
    rules="norms ones; no biases",
)
