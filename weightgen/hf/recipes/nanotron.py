"""nanotron: nanotron's standard parametrization (``RandomInit``).

huggingface/nanotron at tag v0.5 (commit 4799d247026a; the last release, which PyPI does
not carry: its newest, 0.4, has no ``scaling/``), ``src/nanotron/scaling/parametrization.py``
``StandardParametrizator``: ``TensorParallelColumnLinear`` weights (``qkv_proj``,
``gate_up_proj``, ``lm_head``) ``normal_(std=σ)``; ``TensorParallelRowLinear`` weights
(``o_proj``, ``down_proj``) ``normal_(std=σ / sqrt(2 L))``; ``TensorParallelEmbedding``
``normal_(std=σ)``; ``TritonRMSNorm`` weights one; biases zero. σ is the YAML's
``model.init_method.std`` (``RandomInit``; no default there: weightgen's is the config's
initializer_range). ``src/nanotron/models/llama.py`` ``LlamaForTraining.init_model_randomly``
initialises each parameter once: a tied ``lm_head`` is the token embedding, reached first.
No padding row is zeroed.

nanotron v0.5 trains two models: ``LlamaForTraining`` (llama.py) and Starcoder2; this page
follows the first, for the families whose tensors it has (llama, mistral), and refuses what
its ``LlamaConfig`` cannot say: biases (every linear is ``bias=False``) and a head_dim other
than hidden_size / num_attention_heads (``d_qk``). nanotron's main branch (2411b022, April
2026) keeps these formulas (``InitScalingMethod.NUM_LAYERS``, the default, is the same
sqrt(2 L)) and adds a Qwen2 model with MoE layers, not followed here.
"""

from .. import roles
from ..recipe import IDENTITY, Recipe, Scheme, config_std, normal, scaled, sigma, zeros

NO_BIAS = (
    lambda c: not getattr(c, "attention_bias", False) and not getattr(c, "mlp_bias", False),
    "has no biases (every linear is bias=False); set attention_bias and mlp_bias to false",
)
HEAD_DIM = (
    lambda c: c.head_dim * c.num_attention_heads == c.hidden_size,
    "has head_dim = hidden_size / num_attention_heads, not {head_dim}",
)

LLAMA = Scheme(
    {
        roles.EMBEDDING: normal(sigma),  # TensorParallelEmbedding
        roles.ATTN_IN: normal(sigma),  # qkv_proj: column-parallel
        roles.ATTN_OUT: normal(scaled),  # o_proj: row-parallel
        roles.MLP_IN: normal(sigma),  # gate_up_proj: column-parallel
        roles.MLP_OUT: normal(scaled),  # down_proj: row-parallel
        roles.HEAD: normal(sigma),  # lm_head: column-parallel
        roles.NORM: IDENTITY,
        roles.BIAS: zeros,
    },
    tied=roles.EMBEDDING,
    model="llama",
    requires=(NO_BIAS, HEAD_DIM),
)

RECIPE = Recipe(
    name="nanotron",
    trainer="nanotron v0.5",
    summary="nanotron (StandardParametrizator): normal(σ), σ/sqrt(2L) on o_proj and "
    "down_proj; llama and mistral",
    source="huggingface/nanotron v0.5 src/nanotron/scaling/parametrization.py "
    "StandardParametrizator; src/nanotron/models/llama.py init_model_randomly",
    default_std=config_std,
    default_std_text="the config's initializer_range (nanotron's YAML: model.init_method.std)",
    models={"llama": LLAMA, "mistral": LLAMA},
    start="nanotron: torchrun --nproc_per_node=1 examples/llama/convert_hf_to_nanotron.py "
    "--checkpoint_path=DIR --save_path=CKPT (nanotron's main branch), then "
    "model.init_method: {path: CKPT} in its YAML",
)
