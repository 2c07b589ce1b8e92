"""maxtext: MaxText 0.2.5's own initialisation of the models it loads from a Hugging Face folder.

MaxText's decoder init is ``jax.nn.initializers`` calls, so each rule here is one
``variance_scaling`` with MaxText's scale, mode and distribution, its fan axes mapped onto the
folder's layout: MaxText's kernels are [in, out] (experts [E, in, out]), the folder stores
torch's [out, in]; the fan in is MaxText's either way. Read from the maxtext 0.2.5 wheel:

- ``layers/initializers.py`` ``nd_dense_init(scale, mode, distribution)``: the initializer
  ``jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis)``, the
  axes given by the layer.
- ``layers/linears.py`` ``DenseGeneral`` and ``MlpBlock`` (wi_0 gate, wi_1 up, wo down):
  ``nd_dense_init(1.0, "fan_in", "truncated_normal")``, in_axis the input features, so fan in
  is the input width. JAX's truncated_normal variance scaling renormalises: the std is exactly
  sqrt(1 / fan_in).
- ``layers/attentions.py`` ``Attention``: query, key, value and out
  ``nd_dense_init(1.0, "fan_in", "normal")``; ``init_query_w`` divides the query kernel by
  sqrt(head_dim) ("depth_scaling") unless ``use_qk_norm`` or a ``query_pre_attn_scalar`` other
  than 1 is set. llama2 (the llama3.1 configs) and mixtral set neither; qwen2, qwen3 and olmo3
  pass ``query_pre_attn_scalar=head_dim**-0.5``, so their query is not divided. (MaxText divides
  by sqrt(head_dim) cast to the activation dtype, bfloat16 by default: 11.3125 for head_dim 128
  where this recipe uses 11.3137, a 1e-4 relative difference.)
- ``layers/moe.py`` ``RoutedMoE``: the router ``GateLogit`` [emb, E] and the expert kernels
  wi_0, wi_1 (E, emb, mlp) and wo (E, mlp, emb) take the kernel_init the model passes,
  ``nd_dense_init(dense_init_scale, "fan_in", "truncated_normal")`` (models/mixtral.py,
  models/qwen3.py ``Qwen3MoeDecoderLayer``; ``dense_init_scale`` 1.0 in configs/base.yml), with
  in_axis (0,) and out_axis (1,) for the experts: JAX's ``_compute_fans`` then takes E as the
  input size and the last axis as the receptive field, fan in = E x out (E x mlp for wi_0 and
  wi_1, E x emb for wo), not the input width. This recipe reproduces that.
- ``models/models.py`` ``Transformer``: the token embedding ``normal(stddev=1.0)``;
  ``layers/nnx_decoders.py``: an untied ``logits_dense`` is a DenseGeneral (truncated normal,
  fan in emb); with ``logits_via_embedding`` (tied) the head is the embedding. Norm scales
  ones (``layers/normalizations.py``), biases zeros (``default_bias_init``). No padding row.

MaxText takes no base std: every formula comes from the fans (``dense_init_scale`` stays 1.0).
Families MaxText has no model for, or whose MaxText model passes its own initializers
(deepseek, gpt-oss, gemma2/3, qwen3-next), are refused.
"""

from .. import roles
from ..recipe import IDENTITY, Recipe, Scheme, normal, variance_scaling, zeros

DENSE = variance_scaling("truncated_normal")  # DenseGeneral, MlpBlock, GateLogit
ATTENTION = variance_scaling("normal")  # Attention's query, key, value, out
QUERY_DIVIDED = variance_scaling("normal", lambda w: 1.0 / w.head_dim)  # init_query_w
EXPERTS = variance_scaling("truncated_normal", experts=True)  # (E, in, out), fan in E x out

LLAMA2 = Scheme(
    {
        roles.EMBEDDING: normal(lambda w: 1.0),
        roles.ATTN_IN: ATTENTION,
        roles.ATTN_Q: QUERY_DIVIDED,
        roles.ATTN_OUT: ATTENTION,
        roles.MLP_IN: DENSE,
        roles.MLP_OUT: DENSE,
        roles.ROUTER: DENSE,
        roles.EXPERT_IN: EXPERTS,
        roles.EXPERT_OUT: EXPERTS,
        roles.HEAD: DENSE,
        roles.NORM: IDENTITY,
        roles.BIAS: zeros,
    },
    tied=roles.EMBEDDING,  # logits_via_embedding
    model="llama2",
)


def _model(name: str, *, query_divided: bool) -> Scheme:
    query = QUERY_DIVIDED if query_divided else ATTENTION
    return Scheme({**LLAMA2.roles, roles.ATTN_Q: query}, tied=roles.EMBEDDING, model=name)


RECIPE = Recipe(
    name="maxtext",
    trainer="MaxText 0.2.5",
    summary="MaxText 0.2.5: variance scaling on its own fans (experts' fan in E x out), "
    "query / sqrt(head_dim), embedding normal(1); other families refused",
    source="maxtext 0.2.5 layers/initializers.py nd_dense_init, layers/linears.py, "
    "layers/attentions.py init_query_w, layers/moe.py RoutedMoE, models/models.py, "
    "layers/nnx_decoders.py",
    default_std=None,
    default_std_text="MaxText's formulas come from the fans (dense_init_scale 1.0)",
    models={
        "llama": LLAMA2,
        "mixtral": _model("mixtral", query_divided=True),
        "qwen2": _model("qwen2", query_divided=False),
        "qwen3": _model("qwen3", query_divided=False),
        "qwen3_moe": _model("qwen3", query_divided=False),
        "olmo3": _model("olmo3", query_divided=False),
    },
    start="MaxText: load_parameters_path=DIR source_checkpoint_layout=safetensors_dynamic "
    "(or checkpoint_conversion/to_maxtext.py)",
)
