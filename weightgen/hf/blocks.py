"""The parts most decoder families share (transformers' Llama layout), as data to compose:
``model.embed_tokens``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj``, a gated MLP, per-layer
norms, ``model.norm`` and an untied ``lm_head``; ``decoder`` puts them together with a
family's differences as options. Families pass their own defaults and rules.
"""

from __future__ import annotations

from collections.abc import Callable

from . import roles
from .family import EMBEDDING, NORMAL, ZEROS, Config, Field, Rule, Tensor

ATTN = "model.layers.{i}.self_attn."
MLP = "model.layers.{i}.mlp."
Flag = Callable[[Config], bool]
ATTENTION_BIAS: Flag = lambda c: c.attention_bias  # noqa: E731 - the common bias flag
IN, Q, OUT, BIAS = roles.ATTN_IN, roles.ATTN_Q, roles.ATTN_OUT, roles.BIAS


def q_width(c: Config) -> int:
    return c.num_attention_heads * c.head_dim


def kv_width(c: Config) -> int:
    return c.num_key_value_heads * c.head_dim


def decoder_fields(
    *,
    vocab: int,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int | None,
    head_dim: int | None = None,
    tie: bool = False,
    pad: int | None = None,
) -> tuple[Field, ...]:
    """The size fields, with a family's class defaults. ``kv_heads`` and ``head_dim`` of
    None mean what the config classes do: num_attention_heads, hidden_size // heads."""
    return (
        Field("vocab_size", vocab),
        Field("hidden_size", hidden),
        Field("intermediate_size", intermediate),
        Field("num_hidden_layers", layers, high=10_000),
        Field("num_attention_heads", heads),
        Field("num_key_value_heads", kv_heads, derive=lambda c: c.num_attention_heads),
        Field("head_dim", head_dim, derive=lambda c: c.hidden_size // c.num_attention_heads),
        Field("tie_word_embeddings", tie, "bool"),
        Field("pad_token_id", pad, "token"),
        Field("initializer_range", 0.02, "float"),
    )


HEADS_DIVIDE_HIDDEN = (
    lambda c: c.hidden_size % c.num_attention_heads == 0,
    "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}",
)
KV_HEADS_DIVIDE_HEADS = (
    lambda c: c.num_attention_heads % c.num_key_value_heads == 0,
    "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads "
    "{num_key_value_heads}",
)


def embedding() -> tuple[Tensor, ...]:
    return (
        Tensor(
            "model.embed_tokens.weight",
            lambda c: (c.vocab_size, c.hidden_size),
            EMBEDDING,
            roles.EMBEDDING,
            tied=True,
        ),
    )


def qkv_fused(c: Config) -> tuple[int, int]:
    """The fused q, k, v weight the trainers hold (nanotron's qkv_proj, Megatron's
    linear_qkv): [heads * head_dim + 2 kv_heads * head_dim, hidden]."""
    return (q_width(c) + 2 * kv_width(c), c.hidden_size)


def attention(*, qkv_bias: Flag | None = None, o_bias: Flag | None = None) -> tuple[Tensor, ...]:
    """q, k, v, o projections; o_proj is [hidden, heads * head_dim]."""
    fused = {"fused": qkv_fused}
    tensors = [
        Tensor(ATTN + "q_proj.weight", lambda c: (q_width(c), c.hidden_size), NORMAL, Q, **fused),
        Tensor(ATTN + "k_proj.weight", lambda c: (kv_width(c), c.hidden_size), NORMAL, IN, **fused),
        Tensor(ATTN + "v_proj.weight", lambda c: (kv_width(c), c.hidden_size), NORMAL, IN, **fused),
        Tensor(ATTN + "o_proj.weight", lambda c: (c.hidden_size, q_width(c)), NORMAL, OUT),
    ]
    if qkv_bias is not None:
        tensors += [
            Tensor(ATTN + "q_proj.bias", lambda c: (q_width(c),), ZEROS, BIAS, when=qkv_bias),
            Tensor(ATTN + "k_proj.bias", lambda c: (kv_width(c),), ZEROS, BIAS, when=qkv_bias),
            Tensor(ATTN + "v_proj.bias", lambda c: (kv_width(c),), ZEROS, BIAS, when=qkv_bias),
        ]
    if o_bias is not None:
        tensors.append(
            Tensor(ATTN + "o_proj.bias", lambda c: (c.hidden_size,), ZEROS, BIAS, when=o_bias)
        )
    return tuple(tensors)


def gated_mlp(
    prefix: str = MLP,
    *,
    bias: Flag | None = None,
    width: str | Callable[[Config], int] = "intermediate_size",
    mlp_roles: tuple[str, str, str] = (roles.MLP_GATE, roles.MLP_UP, roles.MLP_OUT),
    rule: Rule = NORMAL,
    **where,
) -> tuple[Tensor, ...]:
    """gate_proj, up_proj [width, hidden] and down_proj [hidden, width], with the roles
    (gate, up, down) of a dense MLP unless ``mlp_roles`` says otherwise (experts). ``width``
    is a field's name or a function of the config."""

    def inner(c: Config) -> int:
        return width(c) if callable(width) else getattr(c, width)

    def gate_up(c: Config) -> tuple[int, int]:  # nanotron's gate_up_proj, Megatron's fc1
        return (2 * inner(c), c.hidden_size)

    gate, up, down = mlp_roles
    fused = {"fused": gate_up, **where}
    tensors = [
        Tensor(
            prefix + "gate_proj.weight", lambda c: (inner(c), c.hidden_size), rule, gate, **fused
        ),
        Tensor(prefix + "up_proj.weight", lambda c: (inner(c), c.hidden_size), rule, up, **fused),
        Tensor(
            prefix + "down_proj.weight", lambda c: (c.hidden_size, inner(c)), rule, down, **where
        ),
    ]
    if bias is not None:
        tensors += [
            Tensor(prefix + "gate_proj.bias", lambda c: (inner(c),), ZEROS, BIAS, when=bias),
            Tensor(prefix + "up_proj.bias", lambda c: (inner(c),), ZEROS, BIAS, when=bias),
            Tensor(prefix + "down_proj.bias", lambda c: (c.hidden_size,), ZEROS, BIAS, when=bias),
        ]
    return tuple(tensors)


EXPERT_ROLES = (roles.EXPERT_GATE, roles.EXPERT_UP, roles.EXPERT_OUT)
SHARED_ROLES = (roles.SHARED_GATE, roles.SHARED_UP, roles.SHARED_OUT)


def experts_fit(count: str = "num_experts") -> tuple[Callable[[Config], bool], str]:
    """The check every MoE family makes: a token cannot pick more experts than there are."""
    return (
        lambda c: c.num_experts_per_tok <= getattr(c, count),
        f"num_experts_per_tok {{num_experts_per_tok}} exceeds {count} {{{count}}}",
    )


def routed_experts(
    prefix: str = MLP, *, count: str = "num_experts", width: str = "moe_intermediate_size", **where
) -> tuple[Tensor, ...]:
    """A router ``gate.weight [count, hidden]`` and ``count`` gated experts, one tensor per
    expert (``experts.{e}.``), as the Qwen MoE families write them."""
    return (
        Tensor(
            prefix + "gate.weight",
            lambda c: (getattr(c, count), c.hidden_size),
            NORMAL,
            roles.ROUTER,
            **where,
        ),
        *gated_mlp(prefix + "experts.{e}.", width=width, mlp_roles=EXPERT_ROLES, **where),
    )


def gated_shared_expert(
    prefix: str = MLP, *, width: str = "shared_expert_intermediate_size", **where
) -> tuple[Tensor, ...]:
    """Qwen's shared expert and its gate: ``shared_expert.`` as a gated MLP, and
    ``shared_expert_gate.weight [1, hidden]``, a router-like logit whose sigmoid scales the
    shared expert's output (role ``router.shared_expert_gate``)."""
    return (
        *gated_mlp(prefix + "shared_expert.", width=width, mlp_roles=SHARED_ROLES, **where),
        Tensor(
            prefix + "shared_expert_gate.weight",
            lambda c: (1, c.hidden_size),
            NORMAL,
            roles.SHARED_EXPERT_GATE,
            **where,
        ),
    )


def layer_norms(rule: Rule, *names: str) -> tuple[Tensor, ...]:
    """Per-layer norm weights [hidden]: ``model.layers.{i}.<name>.weight``."""
    return tuple(
        Tensor(f"model.layers.{{i}}.{name}.weight", lambda c: (c.hidden_size,), rule, roles.NORM)
        for name in names
    )


def qk_norm_tensors(rule: Rule, *, per_head: bool) -> tuple[Tensor, ...]:
    """q_norm and k_norm: [head_dim] (qwen3, gemma3) or the full width (olmo2)."""
    if per_head:
        return (
            Tensor(ATTN + "q_norm.weight", lambda c: (c.head_dim,), rule, roles.NORM),
            Tensor(ATTN + "k_norm.weight", lambda c: (c.head_dim,), rule, roles.NORM),
        )
    return (
        Tensor(ATTN + "q_norm.weight", lambda c: (q_width(c),), rule, roles.NORM),
        Tensor(ATTN + "k_norm.weight", lambda c: (kv_width(c),), rule, roles.NORM),
    )


def final_norm(rule: Rule) -> tuple[Tensor, ...]:
    return (Tensor("model.norm.weight", lambda c: (c.hidden_size,), rule, roles.NORM),)


def lm_head() -> tuple[Tensor, ...]:
    """Written only when untied: a tied lm_head is the embedding, and save_pretrained
    leaves it out."""
    return (
        Tensor(
            "lm_head.weight",
            lambda c: (c.vocab_size, c.hidden_size),
            NORMAL,
            roles.HEAD,
            when=lambda c: not c.tie_word_embeddings,
        ),
    )


def decoder(
    norm: Rule,
    *,
    qkv_bias: Flag | None = None,
    o_bias: Flag | None = None,
    mlp_bias: Flag | None = None,
    qk_norms: str | None = None,
    norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm"),
    mlp: tuple[Tensor, ...] | None = None,
) -> tuple[Tensor, ...]:
    """The Llama layout, with a family's differences as options: the norms' rule (ones, or
    zeros where they compute x * (1 + w)), which biases exist, q/k norms per head
    (``"head"``) or over the projection width (``"width"``), the per-layer norms, and the
    MLP (default: a gated MLP)."""
    return (
        *embedding(),
        *attention(qkv_bias=qkv_bias, o_bias=o_bias),
        *(qk_norm_tensors(norm, per_head=qk_norms == "head") if qk_norms else ()),
        *(mlp if mlp is not None else gated_mlp(bias=mlp_bias)),
        *layer_norms(norm, *norms),
        *final_norm(norm),
        *lm_head(),
    )
