"""DeepSeek-V3 (DeepseekV3ForCausalLM), also Kimi-K2 (model_type kimi_k2, which transformers
reads as deepseek_v3) and Moonlight. Multi-head latent attention (MLA): the query through a
low-rank q_a_proj, q_a_layernorm, q_b_proj (or one q_proj when q_lora_rank is null), keys
and values through kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj. Layers below
first_k_dense_replace have a dense MLP; the others a sigmoid router (mlp.gate) with its
score-correction bias, n_routed_experts experts of moe_intermediate_size (one tensor per
expert, as save_pretrained writes them) and shared experts of n_shared_experts times that
width. transformers keeps the router weight and bias in float32 in a bfloat16 or float16
model (``_keep_in_fp32_modules_strict``; 5.x creates them float32, so a float64 model has
them in float32 too). moe_layer_freq is not read by transformers: every layer from
first_k_dense_replace on is sparse. The multi-token-prediction layers
(num_nextn_predict_layers) are not part of the model transformers builds: weightgen leaves
them out and writes num_nextn_predict_layers 0."""

from .. import blocks, roles
from ..family import NORMAL, ONES, ZEROS, Family, Field, Head, Tensor

ATTN, MOE = blocks.ATTN, blocks.MLP
IN, BIAS = roles.ATTN_IN, roles.BIAS


def sparse(c, i: int) -> bool:
    return i >= c.first_k_dense_replace


def dense(c, i: int) -> bool:
    return i < c.first_k_dense_replace


def moe_fields(
    *, experts: int, per_token: int, width: int, first_dense: int, groups: int, top_groups: int
) -> tuple[Field, ...]:
    """The MoE fields DeepSeek-V3 and GLM-4.5 share, with a family's class defaults."""
    return (
        Field("n_routed_experts", experts, high=100_000),
        Field("num_experts_per_tok", per_token, high=100_000),
        Field("moe_intermediate_size", width),
        Field("n_shared_experts", 1, high=100_000),
        Field("first_k_dense_replace", first_dense, low=0),
        Field("n_group", groups, high=100_000),
        Field("topk_group", top_groups, high=100_000),
    )


# What the router's forward needs: experts split into n_group equal groups, topk_group of
# them kept, num_experts_per_tok experts chosen.
MOE_CHECKS = (
    blocks.experts_fit("n_routed_experts"),
    (
        lambda c: c.n_routed_experts % c.n_group == 0,
        "n_routed_experts {n_routed_experts} is not a multiple of n_group {n_group}",
    ),
    (
        lambda c: c.topk_group <= c.n_group,
        "topk_group {topk_group} exceeds n_group {n_group}",
    ),
)


def shared_width(c) -> int:
    return c.moe_intermediate_size * c.n_shared_experts


def experts(c) -> tuple[int, int]:
    return (c.n_routed_experts, c.hidden_size)


# The MLP of every layer: dense below first_k_dense_replace, then router, experts, shared.
MLP = (
    *blocks.gated_mlp(layer_when=dense),
    Tensor(MOE + "gate.weight", experts, NORMAL, roles.ROUTER, layer_when=sparse, float32=True),
    Tensor(
        MOE + "gate.e_score_correction_bias",
        lambda c: (c.n_routed_experts,),
        ZEROS,
        BIAS,
        layer_when=sparse,
        float32=True,
    ),
    *blocks.gated_mlp(
        MOE + "experts.{e}.",
        width="moe_intermediate_size",
        mlp_roles=blocks.EXPERT_ROLES,
        layer_when=sparse,
    ),
    *blocks.gated_mlp(
        MOE + "shared_experts.",
        width=shared_width,
        mlp_roles=blocks.SHARED_ROLES,
        layer_when=sparse,
    ),
)


def q_width(c) -> int:
    return c.num_attention_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim)


def kv_a_width(c) -> int:
    return c.kv_lora_rank + c.qk_rope_head_dim


def low_rank_q(c) -> bool:
    return c.q_lora_rank is not None


def full_q(c) -> bool:
    return c.q_lora_rank is None


def attention_bias(c) -> bool:
    return c.attention_bias


def low_rank_q_bias(c) -> bool:
    return c.attention_bias and c.q_lora_rank is not None


MLA = (
    Tensor(ATTN + "q_proj.weight", lambda c: (q_width(c), c.hidden_size), NORMAL, IN, full_q),
    Tensor(
        ATTN + "q_a_proj.weight", lambda c: (c.q_lora_rank, c.hidden_size), NORMAL, IN, low_rank_q
    ),
    Tensor(ATTN + "q_a_proj.bias", lambda c: (c.q_lora_rank,), ZEROS, BIAS, low_rank_q_bias),
    Tensor(ATTN + "q_a_layernorm.weight", lambda c: (c.q_lora_rank,), ONES, roles.NORM, low_rank_q),
    Tensor(ATTN + "q_b_proj.weight", lambda c: (q_width(c), c.q_lora_rank), NORMAL, IN, low_rank_q),
    Tensor(
        ATTN + "kv_a_proj_with_mqa.weight", lambda c: (kv_a_width(c), c.hidden_size), NORMAL, IN
    ),
    Tensor(
        ATTN + "kv_a_proj_with_mqa.bias", lambda c: (kv_a_width(c),), ZEROS, BIAS, attention_bias
    ),
    Tensor(ATTN + "kv_a_layernorm.weight", lambda c: (c.kv_lora_rank,), ONES, roles.NORM),
    Tensor(
        ATTN + "kv_b_proj.weight",
        lambda c: (c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
        NORMAL,
        IN,
    ),
    Tensor(
        ATTN + "o_proj.weight",
        lambda c: (c.hidden_size, c.num_attention_heads * c.v_head_dim),
        NORMAL,
        roles.ATTN_OUT,
    ),
    Tensor(ATTN + "o_proj.bias", lambda c: (c.hidden_size,), ZEROS, BIAS, attention_bias),
)

FAMILY = Family(
    model_type="deepseek_v3",
    aliases=("kimi_k2",),
    heads=(Head("causal-lm", "DeepseekV3ForCausalLM"),),
    fields=(
        Field("vocab_size", 129280),
        Field("hidden_size", 7168),
        Field("intermediate_size", 18432),
        Field("num_hidden_layers", 61, high=10_000),
        Field("num_attention_heads", 128),
        Field("q_lora_rank", 1536, nullable=True),
        Field("kv_lora_rank", 512),
        Field("qk_nope_head_dim", 128),
        Field("qk_rope_head_dim", 64),
        Field("v_head_dim", 128),
        Field("attention_bias", False, "bool"),
        *moe_fields(experts=256, per_token=8, width=2048, first_dense=3, groups=8, top_groups=4),
        Field("tie_word_embeddings", False, "bool"),
        Field("pad_token_id", None, "token"),
        Field("initializer_range", 0.02, "float"),
    ),
    checks=MOE_CHECKS,
    experts="n_routed_experts",
    tensors=(
        *blocks.embedding(),
        *MLA,
        *MLP,
        *blocks.layer_norms(ONES, "input_layernorm", "post_attention_layernorm"),
        *blocks.final_norm(ONES),
        *blocks.lm_head(),
    ),
    fixed=(("num_nextn_predict_layers", 0),),
    rules="norms (q_a_layernorm, kv_a_layernorm too) ones; router normal, in float32; "
    "e_score_correction_bias zeros, in float32; experts normal; biases zeros",
)
