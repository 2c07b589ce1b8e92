"""Gemma (GemmaForCausalLM): RMSNorms compute x * (1 + w), so transformers initialises
their weights to zero; embeddings tied by default; pad_token_id 0; head_dim 256."""

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
from ..family import ZEROS, Family, Field, Head

FAMILY = Family(
    model_type="gemma",
    heads=(Head("causal-lm", "GemmaForCausalLM"),),
    fields=(
        *decoder_fields(
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
    checks=(KV_HEADS_DIVIDE_HEADS,),
    tensors=(
        *embedding(),
        *attention(qkv_bias=lambda c: c.attention_bias, o_bias=lambda c: c.attention_bias),
        *gated_mlp(),
        *layer_norms(ZEROS, "input_layernorm", "post_attention_layernorm"),
        *final_norm(ZEROS),
        *lm_head(),
    ),
    rules="norms **zeros** (x * (1 + w)); biases (attention_bias) zeros",
)
