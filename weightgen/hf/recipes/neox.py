"""neox: GPT-NeoX's initialisation as Pythia uses it.

megatron/model/init_functions.py: ``small_init_init_method(dim)`` is
``normal_(std=sqrt(2 / (5 d)))`` and ``wang_init_method(n_layers, dim)`` is
``normal_(std=2 / (L sqrt(d)))``. configs/pythia/*.yml set ``init_method: small_init`` and
``output_layer_init_method: wang_init``. megatron/model/gpt2_model.py and transformer.py give
``init_method`` to the embedding (``EmbeddingPipe``), ``query_key_value``, ``dense_h_to_4h``
and the final linear (``ParallelLinearPipe``), and ``output_layer_init_method`` to the
attention ``dense`` and ``dense_4h_to_h``. Biases zero, norms one; no padding row. Both
formulas come from the width and depth alone: this recipe takes no base std.
"""

from .. import roles
from ..recipe import IDENTITY, Recipe, Scheme, normal, small_init, wang_init, zeros

RECIPE = Recipe(
    name="neox",
    trainer="GPT-NeoX",
    summary="GPT-NeoX (Pythia): small_init sqrt(2/(5d)), wang_init 2/(L sqrt(d)) on the outputs",
    source="gpt-neox megatron/model/init_functions.py small_init_init_method, "
    "wang_init_method; configs/pythia/*.yml; megatron/model/gpt2_model.py, transformer.py",
    default_std=None,
    default_std_text="small_init and wang_init derive their std from d and L",
    scheme=Scheme(
        {
            roles.EMBEDDING: normal(small_init),
            roles.ATTN_IN: normal(small_init),
            roles.ATTN_OUT: normal(wang_init),
            roles.MLP_IN: normal(small_init),
            roles.MLP_OUT: normal(wang_init),
            roles.ROUTER: normal(small_init),
            roles.EXPERT_IN: normal(small_init),
            roles.EXPERT_OUT: normal(wang_init),
            roles.HEAD: normal(small_init),
            roles.NORM: IDENTITY,
            roles.BIAS: zeros,
        },
        tied=roles.EMBEDDING,
    ),
    start="GPT-NeoX reads its own checkpoints; from a Hugging Face folder, through any of the "
    "trainers below",
)
