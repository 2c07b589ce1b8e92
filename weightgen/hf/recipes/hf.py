"""hf: transformers' own initialisation, what ``weightgen hf`` writes without ``--init``.

Every tensor keeps its family's rule: ``PreTrainedModel._init_weights`` and each model's own
(transformers 5.24.0): normal(initializer_range) for Linear and Embedding weights, the
embedding row at pad_token_id zeroed, norms at the identity, biases zero, and each family's
differences (gpt2's c_proj at σ / sqrt(2 n_layer), ...).
"""

from .. import roles
from ..recipe import KEEP, Recipe, Scheme, config_std

RECIPE = Recipe(
    name="hf",
    trainer="transformers 5.24.0",
    summary="transformers: each family's own _init_weights (the default)",
    source="transformers 5.24.0, modeling_utils.PreTrainedModel._init_weights and each "
    "family's _init_weights",
    default_std=config_std,
    default_std_text="the config's initializer_range",
    scheme=Scheme({role: KEEP for role in roles.ROLES}, pad_row=True),
    start="transformers: AutoModelForCausalLM.from_pretrained(DIR)",
)
