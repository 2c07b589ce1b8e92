"""Phi-3 (Phi3ForCausalLM): q, k and v fused in qkv_proj, gate and up fused in gate_up_proj;
no biases."""

from .. import blocks, roles
from ..blocks import ATTN, MLP, kv_width, q_width
from ..family import NORMAL, ONES, Family, Head, Tensor

FAMILY = Family(
    model_type="phi3",
    heads=(Head("causal-lm", "Phi3ForCausalLM"),),
    fields=blocks.decoder_fields(
        vocab=32064,
        hidden=3072,
        intermediate=8192,
        layers=32,
        heads=32,
        kv_heads=None,
        pad=32000,
    ),
    checks=(blocks.KV_HEADS_DIVIDE_HEADS,),
    tensors=(
        *blocks.embedding(),
        Tensor(
            ATTN + "qkv_proj.weight",
            lambda c: (q_width(c) + 2 * kv_width(c), c.hidden_size),
            NORMAL,
            roles.ATTN_IN,
        ),
        Tensor(
            ATTN + "o_proj.weight", lambda c: (c.hidden_size, q_width(c)), NORMAL, roles.ATTN_OUT
        ),
        Tensor(
            MLP + "gate_up_proj.weight",
            lambda c: (2 * c.intermediate_size, c.hidden_size),
            NORMAL,
            roles.MLP_IN,
        ),
        Tensor(
            MLP + "down_proj.weight",
            lambda c: (c.hidden_size, c.intermediate_size),
            NORMAL,
            roles.MLP_OUT,
        ),
        *blocks.layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *blocks.final_norm(ONES),
        *blocks.lm_head(),
    ),
    rules="norms ones; no biases",
)
