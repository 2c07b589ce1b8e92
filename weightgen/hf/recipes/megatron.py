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

μP (``--mup-base-width W``): megatron-core 0.19.2 with ``use_mup=True,
mup_base_hidden_size=W``. ``transformer_config.py`` ``TransformerConfig.__post_init__`` sets
``mup_width_mult`` m = hidden_size / W, then ``init_method`` to
``init_method_normal(σ / sqrt(m))`` and ``output_layer_init_method`` to
``utils.py`` ``mup_scaled_init_method_normal(σ, L, m)``, normal_(std=σ / (sqrt(2 L)
sqrt(m))) (multiplier 2; 1 only for hybrid models, which weightgen's families are not);
``embedding_init_method`` is set *before* that, from ``embedding_init_method_std`` (σ when
unset): embeddings stay N(σ). ``models/gpt/gpt_model.py`` ``GPTModel.__init__`` gives an
untied ``output_layer`` ``config.embedding_init_method`` under μP (N(σ), as without μP);
a tied one is the embedding. The router, its bias, ``linear_qkv`` and ``linear_fc1`` (experts'
and shared experts' too) take ``init_method``. μP's forward multipliers are not weights:
``mup_output_mult`` (1/m on the logits, ``language_module.py`` ``_scale_logits``),
``mup_embedding_mult`` and the attention scale sqrt(``mup_base_head_dim``) /
kv_channels**``mup_attn_scale_power`` (1/d_head) live in the trainer's flags.
"""

from .. import roles
from ..recipe import IDENTITY, Recipe, Scheme, config_std, mup, mup_scaled, normal, sigma, zeros

RECIPE = Recipe(
    name="megatron",
    trainer="Megatron-LM (megatron-core 0.19)",
    summary="Megatron-LM: normal(σ), σ/sqrt(2L) on the outputs into the residual stream",
    source="Megatron-LM megatron/core/utils.py init_method_normal, scaled_init_method_normal, "
    "mup_scaled_init_method_normal; megatron/core/transformer/transformer_config.py "
    "TransformerConfig.__post_init__; megatron/core/models/gpt/gpt_model.py (output_layer)",
    default_std=config_std,
    default_std_text="the config's initializer_range, as Megatron Bridge sets init_method_std",
    scheme=Scheme(
        {
            # Without --mup-base-width m = 1: mup is σ and mup_scaled is σ / sqrt(2 L).
            roles.EMBEDDING: normal(sigma),  # embedding_init_method: never width-scaled
            roles.ATTN_IN: normal(mup),  # init_method
            roles.ATTN_OUT: normal(mup_scaled),  # output_layer_init_method
            roles.MLP_IN: normal(mup),
            roles.MLP_OUT: normal(mup_scaled),
            roles.ROUTER: normal(mup),
            roles.EXPERT_IN: normal(mup),
            roles.EXPERT_OUT: normal(mup_scaled),
            # init_method without μP, embedding_init_method with it: σ either way.
            roles.HEAD: normal(sigma),
            roles.NORM: IDENTITY,
            roles.BIAS: zeros,
            roles.ROUTER_BIAS: normal(mup),  # TopKRouter's bias: init_method, like its weight
        },
        tied=roles.EMBEDDING,
    ),
    start="Megatron Bridge: AutoBridge.from_hf_pretrained(DIR).to_megatron_provider("
    "load_weights=True)",
    mup="megatron-core's use_mup=True, mup_base_hidden_size=W: m = d / W; init_method "
    "σ/sqrt(m), output_layer_init_method σ/(sqrt(2L) sqrt(m)), embeddings and an untied "
    "head σ",
)
