"""Mixtral (MixtralForCausalLM): Mistral's attention; each layer's MLP is a router
(block_sparse_moe.gate) and num_local_experts experts (w1, w3 [I, H]; w2 [H, I]), written one
tensor per expert, as save_pretrained writes them in 4.x and 5.x alike."""

from .. import blocks, roles
from ..family import NORMAL, ONES, Family, Field, Head, Tensor

MOE = "model.layers.{i}.block_sparse_moe."
EXPERT = MOE + "experts.{e}."


def inner(c) -> tuple[int, int]:
    return (c.intermediate_size, c.hidden_size)


FAMILY = Family(
    model_type="mixtral",
    heads=(Head("causal-lm", "MixtralForCausalLM"),),
    fields=(
        *blocks.decoder_fields(
            vocab=32000, hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8
        ),
        Field("num_local_experts", 8, high=100_000),
        Field("num_experts_per_tok", 2, high=100_000),
    ),
    checks=(
        blocks.KV_HEADS_DIVIDE_HEADS,
        blocks.experts_fit("num_local_experts"),
    ),
    experts="num_local_experts",
    tensors=blocks.decoder(
        ONES,
        mlp=(
            Tensor(
                MOE + "gate.weight",
                lambda c: (c.num_local_experts, c.hidden_size),
                NORMAL,
                roles.ROUTER,
            ),
            Tensor(EXPERT + "w1.weight", inner, NORMAL, roles.EXPERT_GATE),
            Tensor(EXPERT + "w2.weight", lambda c: inner(c)[::-1], NORMAL, roles.EXPERT_OUT),
            Tensor(EXPERT + "w3.weight", inner, NORMAL, roles.EXPERT_UP),
        ),
    ),
    rules="norms ones; router and experts normal; no biases",
)
