"""Qwen3-Next (Qwen3NextForCausalLM): a hybrid of gated DeltaNet layers (``linear_attn``) and
gated attention layers (``self_attn``, whose q_proj is twice the usual width: queries and
their output gates), by ``layer_types`` (default: every ``full_attention_interval``-th layer
full attention, the others linear); an MoE with a shared expert and its sigmoid gate
(``shared_expert_gate``) unless the layer is in mlp_only_layers or off decoder_sparse_step.

Norms compute x * (1 + w), zero-initialised, except the DeltaNet's gated RMSNorm (w * x,
ones). ``_init_weights`` (transformers 5.24.0): dt_bias ones, A_log = log(U(0.01, 16))
(4.57.6: log(U(0, 16))), conv1d (a Conv1d) and every Linear normal(initializer_range).
The multi-token-prediction weights of the published checkpoints (``mtp.*``) are not part of
the model transformers builds (it ignores them on load): not written.
"""

from dataclasses import replace

from .. import blocks, roles
from ..family import NORMAL, ONES, ZEROS, Family, Field, Head, Rule, Tensor
from .qwen3_moe import dense, moe_fields, sparse

LINEAR = "model.layers.{i}.linear_attn."
ATTN, MLP = blocks.ATTN, blocks.MLP
LAYER_TYPES = ("linear_attention", "full_attention")  # what both 4.57.6 and 5.24.0 build

# torch: empty(num_v_heads).uniform_(0.01, 16).log_(), i.e. log(0.01 + 15.99 * U[0, 1)):
# jnp.log(jax.nn.initializers.uniform(15.99)(key, shape, dtype) + 0.01).
A_LOG = Rule("uniform", scale=15.99, transform=(("name", "log"), ("offset", 0.01)))


def linear(c, i: int) -> bool:
    return c.layer_types[i] == "linear_attention"


def full(c, i: int) -> bool:
    return c.layer_types[i] == "full_attention"


def default_layer_types(c) -> list[str]:
    """The config class's: full attention every full_attention_interval-th layer."""
    interval = c.full_attention_interval
    return [LAYER_TYPES[(i + 1) % interval == 0] for i in range(c.num_hidden_layers)]


def key_dim(c) -> int:
    return c.linear_num_key_heads * c.linear_key_head_dim


def value_dim(c) -> int:
    return c.linear_num_value_heads * c.linear_value_head_dim


def q_width(c) -> int:
    return c.num_attention_heads * c.head_dim


def kv_width(c) -> int:
    return c.num_key_value_heads * c.head_dim


def hidden(c) -> tuple[int]:
    return (c.hidden_size,)


BIAS = lambda c: c.attention_bias  # noqa: E731

GATED_ATTENTION = (
    Tensor(ATTN + "q_proj.weight", lambda c: (2 * q_width(c), c.hidden_size), NORMAL, blocks.IN),
    Tensor(ATTN + "k_proj.weight", lambda c: (kv_width(c), c.hidden_size), NORMAL, blocks.IN),
    Tensor(ATTN + "v_proj.weight", lambda c: (kv_width(c), c.hidden_size), NORMAL, blocks.IN),
    Tensor(ATTN + "o_proj.weight", lambda c: (c.hidden_size, q_width(c)), NORMAL, blocks.OUT),
    Tensor(ATTN + "q_proj.bias", lambda c: (2 * q_width(c),), ZEROS, roles.BIAS, when=BIAS),
    Tensor(ATTN + "k_proj.bias", lambda c: (kv_width(c),), ZEROS, roles.BIAS, when=BIAS),
    Tensor(ATTN + "v_proj.bias", lambda c: (kv_width(c),), ZEROS, roles.BIAS, when=BIAS),
    Tensor(ATTN + "o_proj.bias", hidden, ZEROS, roles.BIAS, when=BIAS),
    Tensor(ATTN + "q_norm.weight", lambda c: (c.head_dim,), ZEROS, roles.NORM),
    Tensor(ATTN + "k_norm.weight", lambda c: (c.head_dim,), ZEROS, roles.NORM),
)

GATED_DELTANET = (
    # A depthwise Conv1d over q, k and v: [channels, 1, kernel]; torch's fans are those of
    # a conv kernel (in = 1 * kernel, out = channels * kernel).
    Tensor(
        LINEAR + "conv1d.weight",
        lambda c: (2 * key_dim(c) + value_dim(c), 1, c.linear_conv_kernel_dim),
        NORMAL,
        "special.conv1d",
        fans=(1, 0, ()),
    ),
    Tensor(
        LINEAR + "in_proj_qkvz.weight",
        lambda c: (2 * key_dim(c) + 2 * value_dim(c), c.hidden_size),
        NORMAL,
        blocks.IN,
    ),
    Tensor(
        LINEAR + "in_proj_ba.weight",
        lambda c: (2 * c.linear_num_value_heads, c.hidden_size),
        NORMAL,
        blocks.IN,
    ),
    Tensor(LINEAR + "dt_bias", lambda c: (c.linear_num_value_heads,), ONES, "special.dt_bias"),
    Tensor(LINEAR + "A_log", lambda c: (c.linear_num_value_heads,), A_LOG, "special.a_log"),
    Tensor(LINEAR + "norm.weight", lambda c: (c.linear_value_head_dim,), ONES, roles.NORM),
    Tensor(LINEAR + "out_proj.weight", lambda c: (c.hidden_size, value_dim(c)), NORMAL, blocks.OUT),
)

MOE = (*blocks.routed_experts(), *blocks.gated_shared_expert())


def _layers(tensors: tuple[Tensor, ...], when) -> tuple[Tensor, ...]:
    """The tensors, in the layers ``when`` picks (linear, full; sparse)."""
    return tuple(replace(t, layer_when=when) for t in tensors)


FAMILY = Family(
    model_type="qwen3_next",
    heads=(Head("causal-lm", "Qwen3NextForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=151936,
            hidden=2048,
            intermediate=5632,
            layers=48,
            heads=16,
            kv_heads=2,
            head_dim=256,
        ),
        Field("attention_bias", False, "bool"),
        Field("linear_conv_kernel_dim", 4, high=1024),
        Field("linear_key_head_dim", 128),
        Field("linear_value_head_dim", 128),
        Field("linear_num_key_heads", 16),
        Field("linear_num_value_heads", 32),
        *moe_fields(experts=512, per_token=10, width=512, shared=512),
        # Absent or null, layer_types follows full_attention_interval (a config kwarg, not a
        # class field); weightgen writes both, so every transformers reads the same layers.
        Field("full_attention_interval", 4, high=10_000),
        Field("layer_types", None, "names", derive=default_layer_types, choices=LAYER_TYPES),
    ),
    checks=(
        blocks.KV_HEADS_DIVIDE_HEADS,
        (
            lambda c: len(c.layer_types) == c.num_hidden_layers,
            "layer_types must name one type per layer (num_hidden_layers {num_hidden_layers})",
        ),
        (
            lambda c: c.linear_num_value_heads % c.linear_num_key_heads == 0,
            "linear_num_value_heads {linear_num_value_heads} is not a multiple of "
            "linear_num_key_heads {linear_num_key_heads}",
        ),
        blocks.experts_fit(),
    ),
    experts="num_experts",
    tensors=(
        *blocks.embedding(),
        *_layers(GATED_DELTANET, linear),
        *_layers(GATED_ATTENTION, full),
        *_layers(MOE, sparse),
        *blocks.gated_mlp(layer_when=dense),
        *blocks.layer_norms(ZEROS, "input_layernorm", "post_attention_layernorm"),
        *blocks.final_norm(ZEROS),
        *blocks.lm_head(),
    ),
    rules="norms (q_norm, k_norm too) **zeros** (x * (1 + w)), linear_attn.norm ones; "
    "dt_bias ones; A_log **log(uniform(0.01, 16))** (a spec `transform`); conv1d, routers "
    "(shared_expert_gate too) and experts normal; biases zeros",
)
