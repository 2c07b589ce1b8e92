"""OLMo 2 (Olmo2ForCausalLM): no input_layernorm; norms after attention and after the MLP;
q_norm and k_norm over the full projection width."""

from ..blocks import (
    KV_HEADS_DIVIDE_HEADS,
    attention,
    decoder_fields,
    embedding,
    final_norm,
    gated_mlp,
    layer_norms,
    lm_head,
    qk_norms,
)
from ..family import ONES, Family, Field, Head

FAMILY = Family(
    model_type="olmo2",
    heads=(Head("causal-lm", "Olmo2ForCausalLM"),),
    fields=(
        *decoder_fields(
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
    checks=(KV_HEADS_DIVIDE_HEADS,),
    tensors=(
        *embedding(),
        *attention(qkv_bias=lambda c: c.attention_bias, o_bias=lambda c: c.attention_bias),
        *qk_norms(ONES, per_head=False),
        *gated_mlp(),
        *layer_norms(ONES, "post_attention_layernorm", "post_feedforward_layernorm"),
        *final_norm(ONES),
        *lm_head(),
    ),
    rules="norms (q_norm, k_norm too) ones; biases (attention_bias) zeros",
)
