"""levanter: Levanter's (Marin's trainer's) initialisation, through Haliax's layers.

Read from haliax 1.4.dev453 and levanter 1.2.dev1644 (the package index's newest; levanter
requires haliax >= 1.4.dev443, and the last non-dev releases, haliax 1.3 and levanter 1.1,
predate this init: haliax 1.3's Linear was normal * 0.02):

- ``haliax/nn/linear.py`` ``Linear.init(In, Out, init_scale=1.0)``:
  ``hax.random.truncated_normal(key, shape, -3, 3) * (init_scale * 1 / sqrt(In.size))``
  (``nn/mup.py`` ``LinearStandardParam.init_scale``), which is
  ``jax.nn.initializers.truncated_normal(init_scale / sqrt(fan_in), lower=-3, upper=3)``: cut
  at ±3 and not renormalised, so the std is 0.98658 x the nominal. Bias zeros.
  ``MoELinear.init`` the same per expert, fan in the input width (no E factor).
- ``haliax/nn/embedding.py`` ``Embedding.init(Vocab, Embed, init_scale=1)``: the same
  truncated normal times ``init_scale / Embed.size`` (``EmbeddingStandardParam``): 1 / d,
  not 1 / sqrt(d).
- Levanter's models (``levanter/models/llama.py``, ``mistral.py``, ``mixtral.py``,
  ``qwen.py``, ``olmo.py``, ``gemma.py``; ``levanter/layers/attention.py``
  ``Attention.init``) call these with the default init_scale everywhere: q, k, v (In = Embed),
  o (In = heads x head_dim), the MLP's gate, up (In = Embed) and down (In = the MLP width),
  the router (In = Embed), an untied lm_head (In = Embed: 1 / sqrt(d)), the embedding
  (``LlamaEmbedding`` -> ``Embedding.init``: 1 / d). No depth scaling. A tied head is the
  embedding. Norms at the identity (ones; gemma's zeros, as it computes x * (1 + w)). The
  config's ``initializer_range`` is read by none of these models.

The stds come from the fans and the width: this recipe takes no base std. Families Levanter
has no model (no Hugging Face converter) for are refused; gpt2 is among them here, as
Levanter's gpt2 scales its embeddings by initializer_range / d and its positions by half
that, which this recipe does not write.
"""

from .. import roles
from ..recipe import (
    IDENTITY,
    Recipe,
    Scheme,
    inverse_sqrt_fan_in,
    inverse_width,
    truncated,
    zeros,
)

LINEAR = truncated(inverse_sqrt_fan_in, 3.0)  # hnn.Linear, hnn.MoELinear
EMBEDDING = truncated(inverse_width, 3.0)  # hnn.Embedding

ROLES = {
    roles.EMBEDDING: EMBEDDING,
    roles.ATTN_IN: LINEAR,
    roles.ATTN_OUT: LINEAR,
    roles.MLP_IN: LINEAR,
    roles.MLP_OUT: LINEAR,
    roles.ROUTER: LINEAR,
    roles.EXPERT_IN: LINEAR,
    roles.EXPERT_OUT: LINEAR,
    roles.HEAD: LINEAR,
    roles.NORM: IDENTITY,
    roles.BIAS: zeros,
}


def _model(name: str) -> Scheme:
    return Scheme(ROLES, tied=roles.EMBEDDING, model=name)


RECIPE = Recipe(
    name="levanter",
    trainer="Levanter 1.2.dev1644 (haliax 1.4.dev453)",
    summary="Levanter (Haliax): every linear truncated normal ±3 x 1/sqrt(fan_in), not "
    "renormalised; embedding 1/d; other families refused",
    source="haliax 1.4.dev453 haliax/nn/linear.py Linear.init, MoELinear.init, "
    "haliax/nn/embedding.py Embedding.init, haliax/nn/mup.py; levanter 1.2.dev1644 "
    "levanter/models/{llama,mistral,mixtral,qwen,olmo,gemma}.py, levanter/layers/attention.py",
    default_std=None,
    default_std_text="Haliax's layers take their std from the fans and the width",
    models={
        "llama": _model("llama"),
        "mistral": _model("mistral"),
        "mixtral": _model("mixtral"),
        "qwen2": _model("qwen"),
        "qwen3": _model("qwen3"),
        "olmo2": _model("olmo2"),
        "gemma": _model("gemma"),
        "gemma2": _model("gemma2"),
        "gemma3_text": _model("gemma3"),
    },
    start="Levanter: initialize_from_hf: DIR in the training config (the model section's "
    "sizes as config.json)",
)
