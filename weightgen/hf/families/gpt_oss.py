"""gpt-oss (GptOssForCausalLM): q/k/v/o with biases (attention_bias) and a learned sink
logit per head (``self_attn.sinks``); each layer's MLP is a router with a bias and
num_local_experts experts kept fused, as save_pretrained writes them in 4.x and 5.x alike:
``experts.gate_up_proj [E, H, 2I]`` (gate and up columns interleaved) and
``experts.down_proj [E, I, H]``, stored [expert, in, out], each with a bias [E, out].

GptOssPreTrainedModel._init_weights (5.24.0, and 4.57.6 the same): experts normal, their
biases zeros, sinks normal, router weight **and bias** normal. Roles: the router bias is
``bias.router`` and the experts' biases ``bias.expert``, so a recipe can follow its trainer
(Megatron draws a router bias like the weight, torchtitan zeroes it and draws the experts'
biases at its depth std; a recipe that says nothing zeroes biases); the sinks are
``special.sinks``. layer_types (sliding or full attention) does not change any shape; it is
checked, since the model indexes its masks by it.

transformers 4.57.6 builds q/k/v/o biases whatever attention_bias says (it sets the
attribute to True); 5.24.0 follows the field. With attention_bias false the folder is what
5.24.0 writes, and 4.57.6 reports the biases missing.
"""

from .. import blocks, roles
from ..family import NORMAL, ONES, ZEROS, Family, Field, Head, Tensor

MLP = blocks.MLP
EXPERTS = MLP + "experts."
EXPERT_FANS = (-2, -1, (0,))  # [expert, in, out]
EXPERT_BIAS, ROUTER_BIAS = roles.EXPERT_BIAS, roles.ROUTER_BIAS
LAYER_TYPES = ("full_attention", "sliding_attention")  # the masks the model builds


def alternating(c) -> list[str]:
    """GptOssConfig's default: sliding on even layers, full on odd ones."""
    return [LAYER_TYPES[i % 2 == 0] for i in range(c.num_hidden_layers)]


def experts(c) -> int:
    return c.num_local_experts


FAMILY = Family(
    model_type="gpt_oss",
    heads=(Head("causal-lm", "GptOssForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=201088,
            hidden=2880,
            intermediate=2880,
            layers=36,
            heads=64,
            kv_heads=8,
            head_dim=64,
        ),
        Field("attention_bias", True, "bool"),
        # 5.x maps num_experts to num_local_experts (attribute_map); 4.x reads only the latter,
        # which weightgen writes.
        Field("num_local_experts", 128, high=100_000, aliases=("num_experts",)),
        Field("num_experts_per_tok", 4, high=100_000),
        Field(
            "layer_types",
            None,
            "names",
            derive=alternating,
            choices=LAYER_TYPES,
            length="num_hidden_layers",
        ),
    ),
    checks=(
        blocks.KV_HEADS_DIVIDE_HEADS,
        blocks.experts_fit("num_local_experts"),
    ),
    tensors=(
        *blocks.embedding(),
        *blocks.attention(qkv_bias=blocks.ATTENTION_BIAS, o_bias=blocks.ATTENTION_BIAS),
        Tensor(
            blocks.ATTN + "sinks",
            lambda c: (c.num_attention_heads,),
            NORMAL,
            roles.SPECIAL + ".sinks",
        ),
        Tensor(MLP + "router.weight", lambda c: (experts(c), c.hidden_size), NORMAL, roles.ROUTER),
        Tensor(MLP + "router.bias", lambda c: (experts(c),), NORMAL, ROUTER_BIAS),
        Tensor(
            EXPERTS + "gate_up_proj",
            lambda c: (experts(c), c.hidden_size, 2 * c.intermediate_size),
            NORMAL,
            roles.EXPERT_IN,
            fans=EXPERT_FANS,
        ),
        Tensor(
            EXPERTS + "gate_up_proj_bias",
            lambda c: (experts(c), 2 * c.intermediate_size),
            ZEROS,
            EXPERT_BIAS,
        ),
        Tensor(
            EXPERTS + "down_proj",
            lambda c: (experts(c), c.intermediate_size, c.hidden_size),
            NORMAL,
            roles.EXPERT_OUT,
            fans=EXPERT_FANS,
        ),
        Tensor(
            EXPERTS + "down_proj_bias", lambda c: (experts(c), c.hidden_size), ZEROS, EXPERT_BIAS
        ),
        *blocks.layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *blocks.final_norm(ONES),
        *blocks.lm_head(),
    ),
    rules="norms ones; router weight **and bias** normal; attention sinks normal; fused "
    "experts (gate_up_proj, down_proj) normal, their biases zeros; q/k/v/o biases zeros",
)
