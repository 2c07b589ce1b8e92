"""olmo2: OLMo 2's initialisation (OLMo-core ``InitMethod.normal``).

OLMo-core src/olmo_core/nn/transformer/init.py: with ``InitMethod.normal`` every Linear
weight, the embedding and the output head are ``trunc_normal_(mean=0, std=σ, a=-3σ, b=3σ)``,
which is ``jax.nn.initializers.truncated_normal(σ, lower=-3, upper=3)``; biases zero, norms
(q_norm and k_norm too) one. No padding row is zeroed. One difference, on purpose: OLMo-core
3.0's ``init_feed_forward_moe`` never visits an MoE block's ``shared_mlp``, which so keeps
torch's nn.Linear default (kaiming_uniform_); this recipe gives shared experts T(σ), as every
other matrix (a ``--rule`` gives them anything else).
"""

from .. import roles
from ..recipe import IDENTITY, Recipe, Scheme, config_std, sigma, truncated, zeros

TRUNC = truncated(sigma, 3.0)

RECIPE = Recipe(
    name="olmo2",
    trainer="OLMo-core 3.0",
    summary="OLMo 2 (OLMo-core InitMethod.normal): every matrix truncated normal(σ) cut at ±3σ",
    source="OLMo-core src/olmo_core/nn/transformer/init.py, InitMethod.normal",
    default_std=config_std,
    default_std_text="the config's initializer_range",
    scheme=Scheme(
        {
            roles.EMBEDDING: TRUNC,
            roles.ATTN_IN: TRUNC,
            roles.ATTN_OUT: TRUNC,
            roles.MLP_IN: TRUNC,
            roles.MLP_OUT: TRUNC,
            roles.ROUTER: TRUNC,
            roles.EXPERT_IN: TRUNC,
            roles.EXPERT_OUT: TRUNC,
            roles.HEAD: TRUNC,
            roles.NORM: IDENTITY,
            roles.BIAS: zeros,
        },
        tied=roles.EMBEDDING,
    ),
    start="OLMo-core: convert the folder with its Hugging Face converter, or any trainer below",
)
