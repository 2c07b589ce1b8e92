"""GLM-4.5 and GLM-4.5-Air (Glm4MoeForCausalLM): Llama's grouped-query attention with
biases on q, k and v when attention_bias (never on o_proj), q_norm and k_norm per head when
use_qk_norm; head_dim from the config (GLM-4.5-Air: 128, with 4096 / 96 heads not whole).
The MLP is DeepSeek-V3's (transformers' modular_glm4_moe builds it from DeepseekV3's
classes): dense below first_k_dense_replace, then a float32 router with its zero
score-correction bias, routed experts one tensor per expert, and shared experts. Partial
rotary embedding changes no shape. The multi-token-prediction layers
(num_nextn_predict_layers) are not part of the model transformers builds: weightgen leaves
them out and writes num_nextn_predict_layers 0."""

import dataclasses

from .. import blocks
from ..family import ONES, Family, Field, Head
from .deepseek_v3 import MLP, MOE_CHECKS, moe_fields


def qk_norm(c) -> bool:
    return c.use_qk_norm


FAMILY = Family(
    model_type="glm4_moe",
    heads=(Head("causal-lm", "Glm4MoeForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=151552, hidden=4096, intermediate=10944, layers=46, heads=96, kv_heads=8
        ),
        Field("attention_bias", False, "bool"),
        Field("use_qk_norm", False, "bool"),
        *moe_fields(experts=128, per_token=8, width=1408, first_dense=1, groups=1, top_groups=1),
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS, *MOE_CHECKS),
    experts="n_routed_experts",
    tensors=(
        *blocks.embedding(),
        *blocks.attention(qkv_bias=blocks.ATTENTION_BIAS),
        *(
            dataclasses.replace(t, when=qk_norm)
            for t in blocks.qk_norm_tensors(ONES, per_head=True)
        ),
        *MLP,
        *blocks.layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *blocks.final_norm(ONES),
        *blocks.lm_head(),
    ),
    fixed=(("num_nextn_predict_layers", 0),),
    rules="norms (q_norm, k_norm too) ones; router normal, in float32; "
    "e_score_correction_bias zeros, in float32; experts normal; biases zeros",
)
