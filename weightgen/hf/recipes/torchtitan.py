"""torchtitan: torchtitan 0.3.0's own initialisation of the model it has for each family.

torchtitan carries each module's init as data in its model configs (``param_init``, set in
``torchtitan/models/<model>/__init__.py``); its four models differ, so this recipe has one
scheme per model and refuses the families torchtitan has no model for. ``trunc_normal_(std=s)``
with torch's absolute default bounds (±2) cuts nothing at these stds and is written as
normal(s) (recipe.torch_trunc_normal); the head's ``trunc_normal_(std=s, a=-3s, b=3s)`` is
truncated_normal(s, -3, 3). σ is torchtitan's literal 0.02 (``--init-std`` replaces every
0.02); the embedding's 1.0 and the head's d**-0.5 do not depend on it. No padding row is
zeroed (its Embedding has no padding_idx). A tied embedding is the head: torchtitan inits the
shared tensor last, as lm_head (``models/common/decoder.py``, Decoder.init_states).

- llama3 (``models/llama3/__init__.py``: _LINEAR_INIT, _depth_init, _EMBEDDING_INIT,
  _output_linear_init): q/k/v and w1 (gate) trunc_normal_(0.02); wo, w2 (down) **and w3 (up)**
  trunc_normal_(0.02 / sqrt(2 (l + 1))); embedding normal_(1.0); head d**-0.5 cut at ±3σ.
- qwen3 (``models/qwen3/__init__.py``: _LINEAR_INIT, _EMBEDDING_INIT): normal_(0.02) for every
  matrix, embedding and head included; no depth scaling. MoE (_residual_output_init,
  _moe_experts_init): o_proj and the experts' down_proj at 0.02 / sqrt(2 L); torchtitan's
  qwen3 MoE has no dense layers, and a config's dense layers (mlp_only_layers) get the dense
  model's normal(σ).
- deepseek_v3 (``models/deepseek_v3/__init__.py``: _LINEAR_INIT, _depth_init,
  _depth_experts_init): llama3's scheme, with every MLA projection at σ, the router at the
  depth std, and routed and shared experts as the MLP (gate σ; up and down at the depth std);
  e_score_correction_bias zero.
- gpt_oss (``models/gpt_oss/__init__.py``: _depth_init, _make_gptoss_attn_config,
  _make_gptoss_experts_config): every matrix at the depth std (q/k/v, o, router, experts), the
  attention sinks and the experts' biases too; attention and router biases zero; embedding
  normal_(0.02); head as llama3's. Note: torchtitan 0.3.0's gpt_oss state-dict adapter does not
  load the experts from a Hugging Face folder (its names for them do not match the module's),
  so torchtitan keeps its own init for them.
"""

from .. import roles
from ..recipe import (
    IDENTITY,
    Recipe,
    Scheme,
    depth,
    inverse_sqrt_width,
    normal,
    scaled,
    sigma,
    torch_trunc_normal,
    truncated,
    zeros,
)

LINEAR = torch_trunc_normal(sigma)  # _LINEAR_INIT: trunc_normal_(std=0.02), bounds ±2
DEPTH = torch_trunc_normal(depth)  # _depth_init(layer_id)
HEAD = truncated(inverse_sqrt_width, 3.0)  # _output_linear_init(dim)
COMMON = {roles.HEAD: HEAD, roles.NORM: IDENTITY, roles.BIAS: zeros}

LLAMA3 = Scheme(
    {
        **COMMON,
        roles.EMBEDDING: normal(lambda w: 1.0),
        roles.ATTN_IN: LINEAR,
        roles.ATTN_OUT: DEPTH,
        roles.MLP_GATE: LINEAR,
        roles.MLP_UP: DEPTH,
        roles.MLP_OUT: DEPTH,
    },
    tied=roles.HEAD,
    model="llama3",
)

QWEN3_LINEAR = normal(sigma)  # _LINEAR_INIT: normal_(std=0.02)
QWEN3 = Scheme(
    {
        roles.EMBEDDING: QWEN3_LINEAR,
        roles.ATTN_IN: QWEN3_LINEAR,
        roles.ATTN_OUT: QWEN3_LINEAR,
        roles.MLP_IN: QWEN3_LINEAR,
        roles.MLP_OUT: QWEN3_LINEAR,
        roles.HEAD: QWEN3_LINEAR,
        roles.NORM: IDENTITY,
        roles.BIAS: zeros,
    },
    tied=roles.HEAD,
    model="qwen3",
)

QWEN3_MOE = Scheme(
    {
        **QWEN3.roles,
        roles.ATTN_OUT: normal(scaled),  # _residual_output_init(n_layers)
        roles.ROUTER: QWEN3_LINEAR,
        roles.EXPERT_IN: QWEN3_LINEAR,  # _EXPERTS_INIT w1, w3
        roles.EXPERT_OUT: normal(scaled),  # _moe_experts_init(n_layers): w2
    },
    tied=roles.HEAD,
    model="qwen3",
)

DEEPSEEK_V3 = Scheme(
    {
        **LLAMA3.roles,
        roles.ROUTER: DEPTH,
        roles.EXPERT_GATE: LINEAR,
        roles.EXPERT_UP: DEPTH,
        roles.EXPERT_OUT: DEPTH,
        roles.SHARED_GATE: LINEAR,
        roles.SHARED_UP: DEPTH,
        roles.SHARED_OUT: DEPTH,
    },
    tied=roles.HEAD,
    model="deepseek_v3",
)

GPT_OSS = Scheme(
    {
        **COMMON,
        roles.EMBEDDING: normal(sigma),  # _EMBEDDING_INIT: normal_(std=0.02), no cut
        roles.ATTN_IN: DEPTH,
        roles.ATTN_OUT: DEPTH,
        roles.ROUTER: DEPTH,
        roles.EXPERT_IN: DEPTH,
        roles.EXPERT_OUT: DEPTH,
        roles.EXPERT_BIAS: DEPTH,  # mlp1_bias_EG, mlp2_bias_ED: not zero
        "special.sinks": DEPTH,
    },
    tied=roles.HEAD,
    model="gpt_oss",
)

RECIPE = Recipe(
    name="torchtitan",
    trainer="torchtitan 0.3.0",
    summary="torchtitan 0.3.0: its own model's init (llama3, qwen3, deepseek_v3, gpt_oss); "
    "other families refused",
    source="torchtitan 0.3.0 torchtitan/models/{llama3,qwen3,deepseek_v3,gpt_oss}/__init__.py, "
    "models/common/param_init.py, models/common/decoder.py",
    default_std=lambda c: 0.02,
    default_std_text="torchtitan's 0.02",
    models={
        "llama": LLAMA3,
        "mistral": LLAMA3,
        "qwen3": QWEN3,
        "qwen3_moe": QWEN3_MOE,
        "deepseek_v3": DEEPSEEK_V3,
        "gpt_oss": GPT_OSS,
    },
    start="torchtitan: --checkpoint.initial_load_path DIR --checkpoint.initial_load_in_hf",
)
