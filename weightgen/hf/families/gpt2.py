"""GPT-2 (GPT2LMHeadModel): Conv1D weights stored [in, out]; every projection into the
residual stream (attn.c_proj, mlp.c_proj) drawn with std / sqrt(2 * n_layer); no zero row
(its embeddings take no padding_idx)."""

from .. import roles
from ..family import ONES, ZEROS, Family, Field, Head, Rule, Tensor
from ..roles import ATTN_IN, ATTN_OUT, BIAS, NORM

H = "transformer.h.{i}."
RESIDUAL = Rule("normal", std=lambda c, sigma: sigma / (2 * c.n_layer) ** 0.5)
NORMAL = Rule("normal")
CONV1D = (-2, -1, ())  # Conv1D stores its weight [in, out]: JAX's own default fan axes
CROSS = lambda c: c.add_cross_attention  # noqa: E731


def inner(c) -> int:
    return c.n_inner


def width(c) -> int:
    return c.n_embd


FAMILY = Family(
    model_type="gpt2",
    heads=(Head("causal-lm", "GPT2LMHeadModel"),),
    fields=(
        Field("vocab_size", 50257),
        Field("n_embd", 768),
        Field("n_layer", 12, high=10_000),
        Field("n_head", 12),
        Field("n_inner", None, derive=lambda c: 4 * c.n_embd),
        Field("n_positions", 1024),
        Field("add_cross_attention", False, "bool"),
        Field("tie_word_embeddings", True, "bool"),
        Field("initializer_range", 0.02, "float"),
    ),
    checks=(
        (
            lambda c: c.n_embd % c.n_head == 0,
            "n_embd {n_embd} is not a multiple of n_head {n_head}",
        ),
    ),
    layers="n_layer",
    hidden="n_embd",
    tensors=(
        Tensor(
            "transformer.wte.weight",
            lambda c: (c.vocab_size, width(c)),
            NORMAL,
            roles.EMBEDDING,
            tied=True,
        ),
        Tensor(
            "transformer.wpe.weight", lambda c: (c.n_positions, width(c)), NORMAL, roles.EMBEDDING
        ),
        Tensor(H + "ln_1.weight", lambda c: (width(c),), ONES, NORM),
        Tensor(H + "ln_1.bias", lambda c: (width(c),), ZEROS, BIAS),
        Tensor(
            H + "attn.c_attn.weight",
            lambda c: (width(c), 3 * width(c)),
            NORMAL,
            ATTN_IN,
            fans=CONV1D,
        ),
        Tensor(H + "attn.c_attn.bias", lambda c: (3 * width(c),), ZEROS, BIAS),
        Tensor(
            H + "attn.c_proj.weight",
            lambda c: (width(c), width(c)),
            RESIDUAL,
            ATTN_OUT,
            fans=CONV1D,
        ),
        Tensor(H + "attn.c_proj.bias", lambda c: (width(c),), ZEROS, BIAS),
        Tensor(H + "ln_cross_attn.weight", lambda c: (width(c),), ONES, NORM, when=CROSS),
        Tensor(H + "ln_cross_attn.bias", lambda c: (width(c),), ZEROS, BIAS, when=CROSS),
        Tensor(
            H + "crossattention.c_attn.weight",
            lambda c: (width(c), 2 * width(c)),
            NORMAL,
            ATTN_IN,
            when=CROSS,
            fans=CONV1D,
        ),
        Tensor(
            H + "crossattention.c_attn.bias", lambda c: (2 * width(c),), ZEROS, BIAS, when=CROSS
        ),
        Tensor(
            H + "crossattention.q_attn.weight",
            lambda c: (width(c), width(c)),
            NORMAL,
            ATTN_IN,
            when=CROSS,
            fans=CONV1D,
        ),
        Tensor(H + "crossattention.q_attn.bias", lambda c: (width(c),), ZEROS, BIAS, when=CROSS),
        Tensor(
            H + "crossattention.c_proj.weight",
            lambda c: (width(c), width(c)),
            RESIDUAL,
            ATTN_OUT,
            when=CROSS,
            fans=CONV1D,
        ),
        Tensor(H + "crossattention.c_proj.bias", lambda c: (width(c),), ZEROS, BIAS, when=CROSS),
        Tensor(H + "ln_2.weight", lambda c: (width(c),), ONES, NORM),
        Tensor(H + "ln_2.bias", lambda c: (width(c),), ZEROS, BIAS),
        Tensor(
            H + "mlp.c_fc.weight",
            lambda c: (width(c), inner(c)),
            NORMAL,
            roles.MLP_IN,
            fans=CONV1D,
        ),
        Tensor(H + "mlp.c_fc.bias", lambda c: (inner(c),), ZEROS, BIAS),
        Tensor(
            H + "mlp.c_proj.weight",
            lambda c: (inner(c), width(c)),
            RESIDUAL,
            roles.MLP_OUT,
            fans=CONV1D,
        ),
        Tensor(H + "mlp.c_proj.bias", lambda c: (width(c),), ZEROS, BIAS),
        Tensor("transformer.ln_f.weight", lambda c: (width(c),), ONES, NORM),
        Tensor("transformer.ln_f.bias", lambda c: (width(c),), ZEROS, BIAS),
        Tensor(
            "lm_head.weight",
            lambda c: (c.vocab_size, width(c)),
            NORMAL,
            roles.HEAD,
            when=lambda c: not c.tie_word_embeddings,
        ),
    ),
    rules="LayerNorm weights ones, biases zeros; c_proj weights std / sqrt(2 * n_layer); "
    "no zero row",
)
