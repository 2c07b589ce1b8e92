"""BERT: the encoder (BertModel, head ``base``), with the masked-LM head (BertForMaskedLM,
``mlm``) or both pre-training heads (BertForPreTraining, ``pretraining``). The heads nest
the encoder under ``bert.``; the masked-LM head has no pooler; its decoder is the word
embedding unless untied."""

from .. import roles
from ..family import EMBEDDING, NORMAL, ONES, ZEROS, Family, Field, Head, Tensor
from ..roles import ATTN_IN, BIAS, NORM, SPECIAL

L = "{p}encoder.layer.{i}."
HEADS = ("mlm", "pretraining")
UNTIED = lambda c: not c.tie_word_embeddings  # noqa: E731


def square(c) -> tuple[int, int]:
    return (c.hidden_size, c.hidden_size)


def hidden(c) -> tuple[int]:
    return (c.hidden_size,)


FAMILY = Family(
    model_type="bert",
    heads=(
        Head("base", "BertModel"),
        Head("mlm", "BertForMaskedLM", "bert."),
        Head("pretraining", "BertForPreTraining", "bert."),
    ),
    fields=(
        Field("vocab_size", 30522),
        Field("hidden_size", 768),
        Field("num_hidden_layers", 12, high=10_000),
        Field("num_attention_heads", 12),
        Field("intermediate_size", 3072),
        Field("max_position_embeddings", 512),
        Field("type_vocab_size", 2),
        Field("pad_token_id", 0, "token"),
        Field("tie_word_embeddings", True, "bool"),
        Field("initializer_range", 0.02, "float"),
    ),
    checks=(
        (
            lambda c: c.hidden_size % c.num_attention_heads == 0,
            "hidden_size {hidden_size} is not a multiple of num_attention_heads "
            "{num_attention_heads}",
        ),
    ),
    tensors=(
        Tensor(
            "{p}embeddings.word_embeddings.weight",
            lambda c: (c.vocab_size, c.hidden_size),
            EMBEDDING,
            roles.EMBEDDING,
            tied=True,
        ),
        Tensor(
            "{p}embeddings.position_embeddings.weight",
            lambda c: (c.max_position_embeddings, c.hidden_size),
            NORMAL,
            roles.EMBEDDING,
        ),
        Tensor(
            "{p}embeddings.token_type_embeddings.weight",
            lambda c: (c.type_vocab_size, c.hidden_size),
            NORMAL,
            roles.EMBEDDING,
        ),
        Tensor("{p}embeddings.LayerNorm.weight", hidden, ONES, NORM),
        Tensor("{p}embeddings.LayerNorm.bias", hidden, ZEROS, BIAS),
        Tensor(L + "attention.self.query.weight", square, NORMAL, ATTN_IN),
        Tensor(L + "attention.self.query.bias", hidden, ZEROS, BIAS),
        Tensor(L + "attention.self.key.weight", square, NORMAL, ATTN_IN),
        Tensor(L + "attention.self.key.bias", hidden, ZEROS, BIAS),
        Tensor(L + "attention.self.value.weight", square, NORMAL, ATTN_IN),
        Tensor(L + "attention.self.value.bias", hidden, ZEROS, BIAS),
        Tensor(L + "attention.output.dense.weight", square, NORMAL, roles.ATTN_OUT),
        Tensor(L + "attention.output.dense.bias", hidden, ZEROS, BIAS),
        Tensor(L + "attention.output.LayerNorm.weight", hidden, ONES, NORM),
        Tensor(L + "attention.output.LayerNorm.bias", hidden, ZEROS, BIAS),
        Tensor(
            L + "intermediate.dense.weight",
            lambda c: (c.intermediate_size, c.hidden_size),
            NORMAL,
            roles.MLP_IN,
        ),
        Tensor(L + "intermediate.dense.bias", lambda c: (c.intermediate_size,), ZEROS, BIAS),
        Tensor(
            L + "output.dense.weight",
            lambda c: (c.hidden_size, c.intermediate_size),
            NORMAL,
            roles.MLP_OUT,
        ),
        Tensor(L + "output.dense.bias", hidden, ZEROS, BIAS),
        Tensor(L + "output.LayerNorm.weight", hidden, ONES, NORM),
        Tensor(L + "output.LayerNorm.bias", hidden, ZEROS, BIAS),
        Tensor("{p}pooler.dense.weight", square, NORMAL, SPECIAL, heads=("base", "pretraining")),
        Tensor("{p}pooler.dense.bias", hidden, ZEROS, BIAS, heads=("base", "pretraining")),
        Tensor("cls.predictions.bias", lambda c: (c.vocab_size,), ZEROS, BIAS, heads=HEADS),
        Tensor("cls.predictions.transform.dense.weight", square, NORMAL, SPECIAL, heads=HEADS),
        Tensor("cls.predictions.transform.dense.bias", hidden, ZEROS, BIAS, heads=HEADS),
        Tensor("cls.predictions.transform.LayerNorm.weight", hidden, ONES, NORM, heads=HEADS),
        Tensor("cls.predictions.transform.LayerNorm.bias", hidden, ZEROS, BIAS, heads=HEADS),
        # Untied, transformers 5.x keeps the decoder (and its bias, else an alias) apart.
        Tensor(
            "cls.predictions.decoder.weight",
            lambda c: (c.vocab_size, c.hidden_size),
            NORMAL,
            roles.HEAD,
            heads=HEADS,
            when=UNTIED,
        ),
        Tensor(
            "cls.predictions.decoder.bias",
            lambda c: (c.vocab_size,),
            ZEROS,
            BIAS,
            heads=HEADS,
            when=UNTIED,
        ),
        Tensor(
            "cls.seq_relationship.weight",
            lambda c: (2, c.hidden_size),
            NORMAL,
            SPECIAL,
            heads=("pretraining",),
        ),
        Tensor("cls.seq_relationship.bias", lambda c: (2,), ZEROS, BIAS, heads=("pretraining",)),
    ),
    rules="LayerNorm weights ones, biases zeros (cls.predictions.bias too); zero row at "
    "pad_token_id in word_embeddings only",
)
