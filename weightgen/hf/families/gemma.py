"""Gemma (GemmaForCausalLM): RMSNorms compute x * (1 + w), so transformers initialises
their weights to zero; embeddings tied by default; pad_token_id 0; head_dim 256."""

from .. import blocks
from ..family import ZEROS, Family, Field, Head

FAMILY = Family(
    model_type="gemma",
    heads=(Head("causal-lm", "GemmaForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=256000,
            hidden=3072,
            intermediate=24576,
            layers=28,
            heads=16,
            kv_heads=16,
            head_dim=256,
            tie=True,
            pad=0,
        ),
        Field("attention_bias", False, "bool"),
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=blocks.decoder(ZEROS, qkv_bias=blocks.ATTENTION_BIAS, o_bias=blocks.ATTENTION_BIAS),
    rules="norms **zeros** (x * (1 + w)); biases (attention_bias) zeros",
)
