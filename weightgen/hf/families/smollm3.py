"""SmolLM3 (SmolLM3ForCausalLM): the Llama layout, tied by default, with rotary embeddings
left out on some layers (NoPE). ``no_rope_layers`` (1: rope, 0: none; default from
``no_rope_layer_interval``) and ``layer_types`` change no shape; both are checked, since the
model indexes them by layer.

SmolLM3PreTrainedModel has no _init_weights of its own (5.24.0 and 4.57.6):
PreTrainedModel's Linear and Embedding normal(std), the pad row zeroed, RMSNorm weights
ones, biases zeros.
"""

from .. import blocks
from ..family import ONES, Family, Field, Head


def every_interval_nope(c) -> list[int]:
    """SmolLM3Config's default: no rope on every no_rope_layer_interval-th layer."""
    return [int((i + 1) % c.no_rope_layer_interval != 0) for i in range(c.num_hidden_layers)]


FAMILY = Family(
    model_type="smollm3",
    heads=(Head("causal-lm", "SmolLM3ForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=128256,
            hidden=2048,
            intermediate=11008,
            layers=36,
            heads=16,
            kv_heads=4,
            tie=True,
            pad=128004,
        ),
        Field("attention_bias", False, "bool"),  # q, k, v and o biases
        Field("mlp_bias", False, "bool"),
        Field("no_rope_layer_interval", 4),
        Field(
            "no_rope_layers",
            None,
            "ints",
            derive=every_interval_nope,
            length="num_hidden_layers",
        ),
        # Null (the default) is derived by the config class from no_rope_layers and the
        # sliding-window fields; given, one entry per layer.
        Field(
            "layer_types",
            None,
            "names",
            choices=("full_attention", "sliding_attention"),
            length="num_hidden_layers",
        ),
    ),
    checks=(
        blocks.KV_HEADS_DIVIDE_HEADS,
        (
            lambda c: set(c.no_rope_layers) <= {0, 1},
            "no_rope_layers must hold only 1 (rotary) and 0 (no rotary), one per layer",
        ),
    ),
    tensors=blocks.decoder(
        ONES,
        qkv_bias=blocks.ATTENTION_BIAS,
        o_bias=blocks.ATTENTION_BIAS,
        mlp_bias=lambda c: c.mlp_bias,
    ),
    rules="norms ones; biases (attention_bias, mlp_bias) zeros",
)
