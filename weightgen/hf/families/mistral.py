"""Mistral (MistralForCausalLM): the Llama layout without any bias."""

from .. import blocks
from ..family import ONES, Family, Head

FAMILY = Family(
    model_type="mistral",
    heads=(Head("causal-lm", "MistralForCausalLM"),),
    fields=blocks.decoder_fields(
        vocab=32000, hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=blocks.decoder(ONES),
    rules="norms ones; no biases",
)
