"""nanotron-spectral: nanotron's spectral μP (``SpectralMupInit``).

huggingface/nanotron v0.5 (commit 4799d247026a) ``src/nanotron/scaling/parametrization.py``
``SpectralMupParametrizator`` (Yang, Simon, Bernstein 2023, "A Spectral Condition for
Feature Learning", parametrization 1): every ``TensorParallelColumnLinear`` and
``TensorParallelRowLinear`` weight ``normal_(std=(1 / sqrt(fan_in)) min(1, sqrt(fan_out /
fan_in)))`` (``_compute_spectral_std`` with ``self.std = 1.0``), with torch's fans
(``_calculate_fan_in_and_fan_out``) of the *whole* matrix (``_parametrize_mup_weight``
multiplies the sharded fan back by the tensor-parallel size). nanotron's linears are fused:
``qkv_proj`` [(heads + 2 kv_heads) d_qk, d] and ``gate_up_proj`` [2 I, d] (``models/llama.py``
``CausalSelfAttention``, ``MLP``), so the folder's split q_proj, k_proj, v_proj take the fans
of the fused qkv and gate_proj, up_proj those of gate_up (``Tensor.fused``). ``o_proj``,
``down_proj`` and the untied ``lm_head`` (column-parallel) use their own.
``TensorParallelEmbedding`` ``normal_(std=1.0)``; ``TritonRMSNorm`` one. A tied
``lm_head`` is the embedding (``init_model_randomly`` reaches it first). No padding row.

No base std: nanotron fixes it at 1.0 (``--init-std`` is refused). No base width: the
spectral condition is μP by construction, each std a function of the matrix's own fans;
width transfer comes from the learning rates (``LearningRateForSpectralMup``: η fan_out /
fan_in) and nanotron's forward (softmax scale 1/d_head), both in the trainer, and both on
only when the YAML says ``init_method: {use_mup: true}`` (``trainer.py``
``parametrization_method``, ``config.py`` ``_is_using_mup``): nanotron v0.5 cannot load a
checkpoint (``init_method: {path: ...}``) and train it under spectral μP without a change.
``--mup-base-width`` is refused.
Families as ``nanotron``'s (llama, mistral): ``_parametrize_mup_weight`` would also draw a
bias with the fans of a vector, which torch refuses, and the v0.5 parametrizator knows
``TritonRMSNorm`` only. nanotron's main branch (2411b022) keeps the same formula.
"""

from .. import roles
from ..recipe import IDENTITY, Recipe, Scheme, normal, spectral, zeros
from .nanotron import LLAMA

ONE = normal(lambda w: 1.0)
SPECTRAL = normal(spectral)

SCHEME = Scheme(
    {
        roles.EMBEDDING: ONE,
        roles.ATTN_IN: SPECTRAL,
        roles.ATTN_OUT: SPECTRAL,
        roles.MLP_IN: SPECTRAL,
        roles.MLP_OUT: SPECTRAL,
        roles.HEAD: SPECTRAL,
        roles.NORM: IDENTITY,
        roles.BIAS: zeros,
    },
    tied=roles.EMBEDDING,
    model="llama",
    requires=LLAMA.requires,
)

RECIPE = Recipe(
    name="nanotron-spectral",
    trainer="nanotron v0.5",
    summary="nanotron spectral μP (SpectralMupParametrizator): each linear "
    "(1/sqrt(fan_in)) min(1, sqrt(fan_out/fan_in)) over its fused fans, embedding 1; "
    "llama and mistral",
    source="huggingface/nanotron v0.5 src/nanotron/scaling/parametrization.py "
    "SpectralMupParametrizator; src/nanotron/models/llama.py (qkv_proj, gate_up_proj)",
    default_std=None,
    default_std_text="nanotron fixes the spectral std at 1.0",
    models={"llama": SCHEME, "mistral": SCHEME},
    start="nanotron: converted and loaded as for --init nanotron; but nanotron v0.5 turns "
    "on spectral μP's forward (softmax 1/d_head) and learning rates only with "
    "model.init_method: {use_mup: true}, never with {path: CKPT}",
    no_base_width="nanotron-spectral is μP by construction and takes no base width (each "
    "std comes from its matrix's fans)",
)
