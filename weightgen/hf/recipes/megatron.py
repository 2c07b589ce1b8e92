"""megatron: Megatron-LM's (megatron-core's) initialisation.

megatron/core/utils.py: ``init_method_normal(σ)`` is ``normal_(mean=0, std=σ)``;
``scaled_init_method_normal(σ, L)`` is ``normal_(std=σ / sqrt(2 L))``. TransformerConfig
(megatron/core/transformer/transformer_config.py) makes ``init_method`` the first and
``output_layer_init_method`` the second: the latter for the projections that write into the
residual stream, ``linear_proj`` (attention output, MLA's too) and ``linear_fc2`` (MLP output,
routed and shared experts). Everything else takes ``init_method``: embeddings
(``embedding_init_method``, σ unless set), ``linear_qkv`` and MLA's q/kv projections,
``linear_fc1``, the router (its bias too, where it has one, e.g. gpt-oss), the untied
``output_layer``. Other biases are zero, norms one. A tied
output layer is the word embedding, initialised as an embedding. No padding row is zeroed.
"""

from .. import roles
from ..recipe import IDENTITY, Recipe, Scheme, config_std, normal, scaled, sigma, zeros

RECIPE = Recipe(
    name="megatron",
    trainer="Megatron-LM (megatron-core 0.19)",
    summary="Megatron-LM: normal(σ), σ/sqrt(2L) on the outputs into the residual stream",
    source="Megatron-LM megatron/core/utils.py init_method_normal, scaled_init_method_normal; "
    "megatron/core/transformer/transformer_config.py",
    default_std=config_std,
    default_std_text="the config's initializer_range, as Megatron Bridge sets init_method_std",
    scheme=Scheme(
        {
            roles.EMBEDDING: normal(sigma),
            roles.ATTN_IN: normal(sigma),
            roles.ATTN_OUT: normal(scaled),
            roles.MLP_IN: normal(sigma),
            roles.MLP_OUT: normal(scaled),
            roles.ROUTER: normal(sigma),
            roles.EXPERT_IN: normal(sigma),
            roles.EXPERT_OUT: normal(scaled),
            roles.HEAD: normal(sigma),
            roles.NORM: IDENTITY,
            roles.BIAS: zeros,
            roles.ROUTER_BIAS: normal(sigma),  # TopKRouter's bias: init_method, like its weight
        },
        tied=roles.EMBEDDING,
    ),
    start="Megatron Bridge: AutoBridge.from_hf_pretrained(DIR).to_megatron_provider("
    "load_weights=True)",
)
