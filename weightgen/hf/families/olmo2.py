"""OLMo 2 (Olmo2ForCausalLM): no input_layernorm; norms after attention and after the MLP;
q_norm and k_norm over the full projection width."""

from .. import blocks
from ..family import ONES, Family, Field, Head

FAMILY = Family(
    model_type="olmo2",
    heads=(Head("causal-lm", "Olmo2ForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=50304,
            hidden=4096,
            intermediate=11008,
            layers=32,
            heads=32,
            kv_heads=None,
            pad=1,
        ),
        Field("attention_bias", False, "bool"),
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=blocks.decoder(
        ONES,
        qkv_bias=blocks.ATTENTION_BIAS,
        o_bias=blocks.ATTENTION_BIAS,
        qk_norms="width",
        norms=("post_attention_layernorm", "post_feedforward_layernorm"),
    ),
    rules="norms (q_norm, k_norm too) ones; biases (attention_bias) zeros",
)
