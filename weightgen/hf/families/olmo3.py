"""OLMo 3 (Olmo3ForCausalLM): OLMo 2's layout (no input_layernorm; norms after attention
and after the MLP; q_norm and k_norm over the full projection width) with sliding-window
attention on some layers. ``layer_types`` changes no shape; it is checked, since the model
builds one mask and one rotary embedding per type and indexes them by it.

Olmo3PreTrainedModel._init_weights (5.24.0) is PreTrainedModel's plus the rotary buffers,
which are not saved; 4.57.6 has no override. Both: Linear and Embedding normal(std), the pad
row zeroed, RMSNorm weights ones.
"""

import dataclasses

from ..family import Field, Head
from .olmo2 import FAMILY as OLMO2

LAYER_TYPES = ("full_attention", "sliding_attention")  # the masks the model builds


def three_sliding_one_full(c) -> list[str]:
    """Olmo3Config's default: every fourth layer full, the others sliding."""
    return [LAYER_TYPES[(i + 1) % 4 != 0] for i in range(c.num_hidden_layers)]


FAMILY = dataclasses.replace(
    OLMO2,
    model_type="olmo3",
    heads=(Head("causal-lm", "Olmo3ForCausalLM"),),
    fields=(
        *OLMO2.fields,
        Field(
            "layer_types",
            None,
            "names",
            derive=three_sliding_one_full,
            choices=LAYER_TYPES,
            length="num_hidden_layers",
        ),
    ),
)
