"""Qwen2-MoE (Qwen2MoeForCausalLM; Qwen1.5-MoE): Qwen2's attention with q/k/v biases when
qkv_bias (o never has one); layer i is sparse unless it is in mlp_only_layers or (i + 1) is
not a multiple of decoder_sparse_step, as in qwen3_moe. A sparse layer has a router
(``mlp.gate``), num_experts experts of moe_intermediate_size written one tensor per expert, a
shared expert (``mlp.shared_expert``, shared_expert_intermediate_size wide) and the shared
expert's sigmoid gate ``mlp.shared_expert_gate.weight [1, hidden]``; a dense layer has a
gated MLP of intermediate_size.

_init_weights (5.24.0): every Linear normal, experts and router normal, norms ones, biases
zeros (4.57.6: the same, through nn.Linear). The shared expert's gate is a router-like
projection of the hidden state (one logit, through a sigmoid): its role is
``router.shared_expert_gate``, so recipes give it the router's rule (Megatron-core's
SharedExpertMLP inits its ``gate_weight`` with ``init_method``, as the router) unless one
addresses it. Both transformers versions read num_experts and qkv_bias; 4.57.6 requires
num_attention_heads * head_dim == hidden_size (it has no head_dim field of its own).
"""

from .. import blocks
from ..family import ONES, Family, Field, Head
from .qwen3_moe import dense, moe_fields, sparse

LAYER_TYPES = ("full_attention", "sliding_attention")

FAMILY = Family(
    model_type="qwen2_moe",
    heads=(Head("causal-lm", "Qwen2MoeForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=151936, hidden=2048, intermediate=5632, layers=24, heads=16, kv_heads=16
        ),
        Field("qkv_bias", True, "bool"),
        *moe_fields(experts=60, per_token=4, width=1408, shared=5632),
        # 5.x derives it (use_sliding_window, max_window_layers) when null; given, it is checked.
        Field("layer_types", None, "names", choices=LAYER_TYPES, length="num_hidden_layers"),
    ),
    checks=(
        blocks.KV_HEADS_DIVIDE_HEADS,
        (
            lambda c: c.num_attention_heads * c.head_dim == c.hidden_size,
            "num_attention_heads {num_attention_heads} times head_dim {head_dim} is not "
            "hidden_size {hidden_size} (transformers 4.x requires it)",
        ),
        blocks.experts_fit(),
    ),
    experts="num_experts",
    tensors=blocks.decoder(
        ONES,
        qkv_bias=lambda c: c.qkv_bias,
        mlp=(
            *blocks.routed_experts(layer_when=sparse),
            *blocks.gated_shared_expert(layer_when=sparse),
            *blocks.gated_mlp(layer_when=dense),
        ),
    ),
    rules="norms ones; router, experts, shared expert and its gate normal; q/k/v biases "
    "(qkv_bias) zeros",
)
