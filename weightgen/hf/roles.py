"""What each tensor of a model *is*: the vocabulary families and init recipes share.

A family declares each tensor's role; a recipe gives each role a rule; the builder joins
them (neither knows the other). A role may be refined after a dot (``mlp_in.up``): a recipe
that gives the refined role a rule of its own uses it, any other falls back to the role
before the dot. torchtitan, for one, initialises an MLP's up projection (w3) with the
depth-scaled std of its output projection, and its gate (w1) with the base std.
"""

from __future__ import annotations

EMBEDDING = "embedding"  # token (and position, type) embeddings
ATTN_IN = "attn_in"  # q, k, v projections: fused, per head group or low-rank (MLA)
ATTN_Q = "attn_in.q"  # a separate query projection (MaxText scales its init by 1/sqrt(head_dim))
ATTN_OUT = "attn_out"  # the attention output projection, into the residual stream
MLP_IN = "mlp_in"  # a dense MLP's input projections (fc1; gate and up fused)
MLP_GATE = "mlp_in.gate"  # a gated MLP's gate projection (w1)
MLP_UP = "mlp_in.up"  # a gated MLP's up projection (w3)
MLP_OUT = "mlp_out"  # a dense MLP's output projection (fc2, w2), into the residual stream
ROUTER = "router"  # an MoE router's weight
SHARED_EXPERT_GATE = "router.shared_expert_gate"  # a shared expert's gate: one logit, a router
EXPERT_IN = "expert_in"  # routed experts' input projections (gate and up fused)
EXPERT_GATE = "expert_in.gate"
EXPERT_UP = "expert_in.up"
EXPERT_OUT = "expert_out"  # routed experts' output projections
SHARED_IN = "mlp_in.shared"  # an MoE layer's always-on (shared) experts
SHARED_GATE = "mlp_in.gate.shared"
SHARED_UP = "mlp_in.up.shared"
SHARED_OUT = "mlp_out.shared"
HEAD = "head"  # the output head (lm_head), when untied
NORM = "norm"  # norm gains: the identity at init (ones, or zeros where a norm is x * (1 + w))
BIAS = "bias"  # biases: zeros in every trainer's scheme, unless a recipe says otherwise:
ROUTER_BIAS = "bias.router"  # an MoE router's bias (Megatron draws it like the weight)
EXPERT_BIAS = "bias.expert"  # routed experts' biases (torchtitan's gpt_oss draws them)
SPECIAL = "special"  # tensors only a family has: its own rule in every recipe

ROLES: dict[str, str] = {
    EMBEDDING: "token, position and type embeddings",
    ATTN_IN: "attention input projections (q, k, v; fused; low-rank MLA parts)",
    ATTN_Q: "a separate query projection (q_proj)",
    ATTN_OUT: "attention output projection",
    MLP_IN: "MLP input projections (fc1; fused gate and up)",
    MLP_GATE: "a gated MLP's gate projection (w1)",
    MLP_UP: "a gated MLP's up projection (w3)",
    MLP_OUT: "MLP output projection (fc2, w2)",
    SHARED_IN: "shared experts' input projections",
    SHARED_GATE: "shared experts' gate projection",
    SHARED_UP: "shared experts' up projection",
    SHARED_OUT: "shared experts' output projection",
    ROUTER: "MoE router weight",
    SHARED_EXPERT_GATE: "a shared expert's sigmoid gate (inited as a router, as Megatron does)",
    EXPERT_IN: "routed experts' input projections",
    EXPERT_GATE: "routed experts' gate projections",
    EXPERT_UP: "routed experts' up projections",
    EXPERT_OUT: "routed experts' output projections",
    HEAD: "output head (lm_head), when not tied to the embedding",
    NORM: "norm weights (the identity at init)",
    BIAS: "biases",
    ROUTER_BIAS: "an MoE router's bias",
    EXPERT_BIAS: "routed experts' biases",
    SPECIAL: "tensors only one family has (its own rule in every recipe)",
}


def lineage(role: str) -> list[str]:
    """``"mlp_in.up.shared"`` -> ``["mlp_in.up.shared", "mlp_in.up", "mlp_in"]``: the roles
    a recipe is asked for, most specific first."""
    parts = role.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def base(role: str) -> str:
    return role.split(".", 1)[0]
