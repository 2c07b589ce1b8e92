"""StarCoder2 (Starcoder2ForCausalLM): the Llama attention with GQA, LayerNorms with a bias
(per layer and model.norm), a non-gated MLP (``mlp.c_fc`` [inter, hidden], ``mlp.c_proj``
[hidden, inter]), biases on every projection when ``use_bias`` (the default), tied by
default. Its own initializer_range default is 0.018042; sliding_window changes no shape.

Starcoder2PreTrainedModel has no _init_weights of its own (5.24.0 and 4.57.6):
PreTrainedModel's Linear and Embedding normal(std), the pad row zeroed, LayerNorm weights
ones and biases zeros, Linear biases zeros.
"""

from dataclasses import replace

from .. import blocks, roles
from ..family import NORMAL, ONES, ZEROS, Family, Field, Head, Tensor

USE_BIAS = lambda c: c.use_bias  # noqa: E731
NORMS = ("input_layernorm", "post_attention_layernorm")


def inner(c) -> int:
    return c.intermediate_size


MLP = (
    Tensor(blocks.MLP + "c_fc.weight", lambda c: (inner(c), c.hidden_size), NORMAL, roles.MLP_IN),
    Tensor(blocks.MLP + "c_fc.bias", lambda c: (inner(c),), ZEROS, roles.BIAS, when=USE_BIAS),
    Tensor(
        blocks.MLP + "c_proj.weight", lambda c: (c.hidden_size, inner(c)), NORMAL, roles.MLP_OUT
    ),
    Tensor(
        blocks.MLP + "c_proj.bias", lambda c: (c.hidden_size,), ZEROS, roles.BIAS, when=USE_BIAS
    ),
)
# LayerNorm always has a bias, whatever use_bias says.
NORM_BIASES = (
    *(
        Tensor(f"model.layers.{{i}}.{name}.bias", lambda c: (c.hidden_size,), ZEROS, roles.BIAS)
        for name in NORMS
    ),
    Tensor("model.norm.bias", lambda c: (c.hidden_size,), ZEROS, roles.BIAS),
)

FAMILY = Family(
    model_type="starcoder2",
    heads=(Head("causal-lm", "Starcoder2ForCausalLM"),),
    fields=(
        *(
            replace(f, default=0.018042) if f.name == "initializer_range" else f
            for f in blocks.decoder_fields(
                vocab=49152,
                hidden=3072,
                intermediate=12288,
                layers=30,
                heads=24,
                kv_heads=2,
                tie=True,
            )
        ),
        Field("use_bias", True, "bool"),  # q, k, v, o, c_fc and c_proj biases
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=(
        *blocks.decoder(ONES, qkv_bias=USE_BIAS, o_bias=USE_BIAS, norms=NORMS, mlp=MLP),
        *NORM_BIASES,
    ),
    rules="LayerNorm weights ones, biases zeros; biases (use_bias) zeros; "
    "initializer_range default 0.018042",
)
