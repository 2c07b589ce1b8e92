"""A model family as data, and the one builder that turns a family and a config into a spec.

A family declares, for the pinned transformers release: the config fields its tensors depend
on (with the class defaults), the checks the model code needs, its heads (architectures),
and its tensors: a name template, the shape as a small function of the config, and the init
rule of ``_init_weights``. ``build`` validates a config against it and lists the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..errors import UsageError

Config = SimpleNamespace  # the resolved fields, as attributes: c.hidden_size
MAX_INT = 1 << 24  # larger than any size, count or id of a real model; a typo otherwise
MAX_LAYERS = 10_000
MAX_TENSORS = 100_000  # what a spec may hold (specfile.MAX_TENSORS)


@dataclass(frozen=True)
class Field:
    """A config field the tensors depend on, resolved as the config class does: absent, it
    takes the class ``default`` (``derive``d when that is None); null, it is ``derive``d
    (or takes the default when nothing derives it; or stays None when ``nullable``, where
    null means "none", as a LoRA rank). Then checked by ``kind``."""

    name: str
    default: Any = None
    kind: str = "int"  # "int" (from low to high), "bool", "float" (non-negative),
    # "token" (id or null), "ints" (a list of non-negative ints), "names" (a list of
    # ``choices``, or null)
    derive: Callable[[Config], Any] | None = None
    high: int = MAX_INT
    low: int = 1
    nullable: bool = False
    choices: tuple[str, ...] = ()  # "names": the values an entry may take
    length: str | None = None  # a list kind: the field its length must equal (resolved before)
    aliases: tuple[str, ...] = ()  # other names of the field (the config class's attribute_map)

    def resolve(self, config: Mapping[str, Any], c: Config) -> Any:
        name = self.name
        for alias in self.aliases:  # another spelling the config class maps to this field
            if alias in config:
                if self.name in config and config[self.name] != config[alias]:
                    raise UsageError(
                        f"config.json: {alias} and {self.name} name the same field and differ"
                    )
                name = alias
        value = config.get(name)
        derived = self.derive(c) if self.derive is not None else None
        if name not in config:
            value = self.default if self.default is not None else derived
        elif value is None:
            if self.nullable:
                return None
            value = derived if derived is not None else self.default
        if value is None:
            if self.kind in ("token", "names"):
                return None
            raise UsageError(f"config.json: {self.name} is required")
        value = self.check(value, name)
        if self.length is not None and len(value) != getattr(c, self.length):
            raise UsageError(
                f"config.json: {self.name} has {len(value)} entries; {self.length} is "
                f"{getattr(c, self.length)}"
            )
        return value

    def check(self, value: Any, name: str | None = None) -> Any:
        where = f"config.json: {name or self.name}"
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise UsageError(f"{where} must be true or false, got {value!r}")
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{where} must be a number, got {_short(value)}")
            if not (0 <= value <= 1e6 and math.isfinite(float(value))):  # ints compare exactly
                raise UsageError(f"{where} must be a number from 0 to 1e6, got {_short(value)}")
            value = float(value)
        elif self.kind == "token":
            if not is_int or not 0 <= value < MAX_INT:
                raise UsageError(f"{where} must be a token id (a non-negative integer) or null")
        elif self.kind == "ints":
            if (
                not isinstance(value, list)
                or len(value) > MAX_LAYERS
                or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_INT
                    for v in value
                )
            ):
                raise UsageError(
                    f"{where} must be a list of at most {MAX_LAYERS} non-negative integers"
                )
        elif self.kind == "names":
            if not isinstance(value, list) or len(value) > MAX_LAYERS:
                raise UsageError(
                    f"{where} must be a list of at most {MAX_LAYERS} names, got {_short(value)}"
                )
            for item in value:
                if not isinstance(item, str) or item not in self.choices:
                    raise UsageError(
                        f"{where}: {_short(item)} is not one of {', '.join(self.choices)}"
                    )
        elif not is_int or not self.low <= value <= self.high:
            null = " or null" if self.nullable else ""
            raise UsageError(
                f"{where} must be an integer from {self.low} to {self.high}{null}, "
                f"got {_short(value)}"
            )
        return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Rule:
    """How ``_init_weights`` initialises a tensor, as a weightgen initializer (and, where
    that is not one initializer call, a spec ``transform`` of the values drawn)."""

    init: str  # "normal", "zeros", "ones" or "uniform"
    pad_row: bool = False  # an embedding whose row pad_token_id is zeroed
    # normal's stddev from the config and the base std (default: the base std itself)
    std: Callable[[Config, float], float] | None = None
    scale: float | None = None  # uniform's: U[0, scale)
    transform: tuple[tuple[str, Any], ...] = ()  # the spec's "transform" table, as pairs

    def entry(self, c: Config, sigma: float | None = None, *, pad_row: bool = True) -> dict:
        """The spec entry; ``sigma`` is the base std (default: ``init_std(c)``);
        ``pad_row=False`` leaves the padding row as drawn (the trainers do not zero it)."""
        entry: dict[str, Any] = {"init": self.init}
        if self.init == "normal":
            sigma = init_std(c) if sigma is None else sigma
            entry["stddev"] = self.std(c, sigma) if self.std is not None else sigma
            if pad_row and self.pad_row and c.pad_token_id is not None:
                entry["zero_rows"] = [c.pad_token_id]
        if self.scale is not None:
            entry["scale"] = self.scale
        if self.transform:
            entry["transform"] = dict(self.transform)
        return entry


def init_std(c: Config) -> float:
    # transformers 5.x: std = config.initializer_range or 0.02 (modeling_utils._init_weights).
    return c.initializer_range or 0.02


NORMAL = Rule("normal")  # Linear and Conv1D weights, routers
EMBEDDING = Rule("normal", pad_row=True)  # nn.Embedding(..., padding_idx=pad_token_id)
ZEROS = Rule("zeros")  # biases; gemma's norms, which compute x * (1 + w)
ONES = Rule("ones")  # norm weights

TORCH_LINEAR = (-1, -2, ())  # fan axes (in, out, batch) of a torch Linear weight [out, in]


@dataclass(frozen=True)
class Tensor:
    """One tensor, or one per layer (``{i}`` in the name) and per expert (``{e}``);
    ``{p}`` is the head's prefix. ``when`` and ``layer_when`` say where it exists.

    ``role`` says what the tensor is (roles.py), for init recipes; ``rule`` is how the
    family's own ``_init_weights`` initialises it. ``tied`` marks the token embedding, which
    is also the output head when ``tie_word_embeddings``. ``fans`` are the (in, out, batch)
    axes a fan-based initializer uses by default (torch's Linear layout [out, in]; Conv1D
    and fused experts store [..., in, out]). ``float32``: save_pretrained keeps it in
    float32 whatever the model's dtype (``_keep_in_fp32_modules_strict``). ``fused``: the
    shape of the trainers' fused matrix it is a slice of (nanotron's qkv_proj, gate_up_proj).
    """

    name: str
    shape: Callable[[Config], tuple[int, ...]]
    rule: Rule
    role: str
    when: Callable[[Config], bool] | None = None
    layer_when: Callable[[Config, int], bool] | None = None
    heads: tuple[str, ...] | None = None  # None: every head
    tied: bool = False
    fans: tuple = TORCH_LINEAR
    float32: bool = False
    # The shape of the matrix a trainer fuses this tensor into (q, k and v into one qkv
    # weight, gate and up into one), in this tensor's layout: fan-based recipes take its fans.
    fused: Callable[[Config], tuple[int, ...]] | None = None


@dataclass(frozen=True)
class Head:
    name: str  # what --head takes
    architecture: str  # the transformers class, written to config.json's architectures
    prefix: str = ""  # what {p} stands for in tensor names


@dataclass(frozen=True)
class Family:
    model_type: str
    heads: tuple[Head, ...]
    fields: tuple[Field, ...]
    tensors: tuple[Tensor, ...]
    checks: tuple[tuple[Callable[[Config], bool], str], ...] = ()
    layers: str = "num_hidden_layers"  # the field that counts {i}
    experts: str | None = None  # the field that counts {e}
    hidden: str = "hidden_size"  # the field that is the model width (d in init recipes)
    rules: str = ""  # one line for the README's table of init rules
    # Other model_type values naming this architecture; the folder's config.json says
    # model_type, the one transformers builds.
    aliases: tuple[str, ...] = ()
    # config.json keys written with these values whatever the config says: they describe
    # weights the model transformers builds does not have (multi-token prediction layers).
    fixed: tuple[tuple[str, Any], ...] = ()  # (key, value) pairs

    def head(self, name: str | None, architectures: Any) -> Head:
        """The head asked for, else the one config.json's architectures names, else the
        first. An architecture weightgen does not build is refused, never replaced."""
        if name is not None:
            for head in self.heads:
                if head.name == name:
                    return head
            names = ", ".join(h.name for h in self.heads)
            raise UsageError(f"--head {name}: {self.model_type} has the heads {names}")
        if isinstance(architectures, list) and architectures:
            built = {h.architecture: h for h in self.heads}
            other = [a for a in architectures if a not in built]
            if other:
                can = ", ".join(f"{h.architecture} (--head {h.name})" for h in self.heads)
                raise UsageError(
                    f"config.json: architectures names {_short(other[0])}, which weightgen "
                    f"does not build; for {self.model_type} it builds {can}: pass --head to "
                    "write that instead (config.json then names it), or add "
                    "--from-transformers to build the class transformers has"
                )
            return built[architectures[0]]
        return self.heads[0]

    def resolve(self, config: Mapping[str, Any]) -> Config:
        """Every field, validated, defaulted or derived in declaration order; then the
        family's checks."""
        c = Config()
        for item in self.fields:
            setattr(c, item.name, item.resolve(config, c))
        pad = getattr(c, "pad_token_id", None)
        if pad is not None and pad >= c.vocab_size:
            raise UsageError(
                f"config.json: pad_token_id {pad} is not below vocab_size {c.vocab_size} "
                "(the embedding row it names must exist)"
            )
        for check, message in self.checks:
            if not check(c):
                raise UsageError(f"config.json: {message.format(**vars(c))}")
        return c

    def tensors_of(self, head: Head, c: Config) -> list[Built]:
        """Every tensor save_pretrained writes, in declaration order; refused before it is
        built when it would be more than a spec may hold."""
        layers = range(getattr(c, self.layers))
        experts = range(getattr(c, self.experts)) if self.experts else range(0)
        most = sum(
            (len(layers) if "{i}" in t.name else 1) * (len(experts) if "{e}" in t.name else 1)
            for t in self.tensors
        )
        if most > MAX_TENSORS:
            raise UsageError(
                f"config.json: {self.layers} and the expert count make {most:,} tensors; "
                f"a model may have at most {MAX_TENSORS:,}"
            )
        found = []
        for t in self.tensors:
            if t.heads is not None and head.name not in t.heads:
                continue
            if t.when is not None and not t.when(c):
                continue
            shape = tuple(int(d) for d in t.shape(c))
            for i in layers if "{i}" in t.name else [None]:
                if i is not None and t.layer_when is not None and not t.layer_when(c, i):
                    continue
                for e in experts if "{e}" in t.name else [None]:
                    found.append(Built(t.name.format(p=head.prefix, i=i, e=e), shape, t, i))
        return found


@dataclass(frozen=True, slots=True)
class Built:
    """One tensor of a model: its name and shape, its declaration and its layer index
    (None outside the layer stack)."""

    name: str
    shape: tuple[int, ...]
    decl: Tensor
    layer: int | None


@dataclass
class Model:
    """What ``build`` made: the family, head, resolved fields and the tensors."""

    family: Family
    head: Head
    config: Config
    tensors: list[Built] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)
