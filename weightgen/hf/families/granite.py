"""Granite (GraniteForCausalLM): the Llama layout. Its multipliers (embedding_multiplier,
residual_multiplier, attention_multiplier, logits_scaling) scale activations, not weights:
no shape or init depends on them, and config.json carries them through as given.

GranitePreTrainedModel has no _init_weights of its own (5.24.0 and 4.57.6):
PreTrainedModel's Linear and Embedding normal(std), the pad row zeroed, RMSNorm weights
ones, biases zeros.
"""

from .. import blocks
from ..family import ONES, Family, Field, Head

FAMILY = Family(
    model_type="granite",
    heads=(Head("causal-lm", "GraniteForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=32000, hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=None
        ),
        Field("attention_bias", False, "bool"),  # q, k, v and o biases
        Field("mlp_bias", False, "bool"),
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=blocks.decoder(
        ONES,
        qkv_bias=blocks.ATTENTION_BIAS,
        o_bias=blocks.ATTENTION_BIAS,
        mlp_bias=lambda c: c.mlp_bias,
    ),
    rules="norms ones; biases (attention_bias, mlp_bias) zeros; multipliers change no weight",
)
