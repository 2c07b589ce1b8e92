"""Init recipes: what a trainer gives each role (roles.py), as data; the formulas in one place.

A recipe page (``recipes/*.py``) is a table from role to rule, citing the trainer's source.
A rule is a small function of ``Where`` (the base std σ, the layer count L, the width d, the
layer index l, the tensor's shape, μP's base width, the fans of the matrix the trainer holds)
that returns a spec entry (an initializer and its
parameters), or ``KEEP``: the family's own rule (``_init_weights``). Roles are looked up most
specific first (``mlp_in.up``, then ``mlp_in``); ``special`` tensors always keep the family's
rule. No recipe knows a family's tensor names and no family knows a recipe: ``resolve`` joins
them, for the one builder in ``hf/__init__.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from . import roles
from .family import MAX_INT, TORCH_LINEAR, Built, Config, init_std


@dataclass(frozen=True, slots=True)
class Where:
    """What a recipe's rule may depend on. ``fans``: the (in, out, batch) axes of the
    tensor's layout on disk (torch's Linear [out, in] unless the family says otherwise), so
    a fan-based rule takes the trainer's fans whatever the layout; ``experts``: the routed
    expert count (0 without experts); ``head_dim``: the attention head width, where the
    family has one."""

    sigma: float  # the base std: --init-std, else the recipe's default
    layers: int  # L: the model's layer count
    hidden: int  # d: the model's width
    layer: int | None  # l: the layer index, from 0 (None outside the layer stack)
    shape: tuple[int, ...]
    # μP's base width (--mup-base-width): the proxy model's d; None without μP.
    base_width: int | None = None
    # The fans (torch's _calculate_fan_in_and_fan_out) of the matrix the trainer holds: the
    # fused one where the trainer fuses what the folder splits (nanotron's qkv_proj for
    # q_proj, k_proj, v_proj; gate_up_proj for gate_proj, up_proj); None for a vector.
    fan_in: int | None = None
    fan_out: int | None = None
    fans: tuple = TORCH_LINEAR
    experts: int = 0
    head_dim: int | None = None

    @property
    def width_mult(self) -> float:
        """μP's m = d / base width (megatron-core's mup_width_mult); 1 without μP."""
        return self.hidden / self.base_width if self.base_width else 1.0


RuleFn = Callable[[Where], dict | None]


def KEEP(where: Where) -> None:
    """The family's own rule (transformers' ``_init_weights``), with the recipe's σ."""
    return None


IDENTITY = KEEP  # norms: ones, or zeros where the norm computes x * (1 + w)


# --- Standard deviations, as the trainers compute them (sources cited on each page) -------


def sigma(w: Where) -> float:
    return w.sigma


def scaled(w: Where) -> float:
    """Megatron's scaled_init_method_normal: σ / sqrt(2 L)."""
    return w.sigma / math.sqrt(2.0 * w.layers)


def mup(w: Where) -> float:
    """megatron-core's μP init_method: σ / sqrt(m), m = d / base width."""
    return w.sigma / math.sqrt(w.width_mult)


def mup_scaled(w: Where) -> float:
    """megatron-core's mup_scaled_init_method_normal: σ / (sqrt(2 L) sqrt(m))."""
    return w.sigma / (math.sqrt(2.0 * w.layers) * math.sqrt(w.width_mult))


def spectral(w: Where) -> float:
    """nanotron's SpectralMupParametrizator._compute_spectral_std with std 1:
    (1 / sqrt(fan_in)) min(1, sqrt(fan_out / fan_in)) (Yang et al. 2023, parametrization 1)."""
    if w.fan_in is None or w.fan_out is None:
        raise AssertionError("a spectral std needs a matrix's fans")
    return (1.0 / math.sqrt(w.fan_in)) * min(1.0, math.sqrt(w.fan_out / w.fan_in))


def small_init(w: Where) -> float:
    """GPT-NeoX's small_init_init_method: sqrt(2 / (5 d)) (Nguyen & Salazar 2019)."""
    return math.sqrt(2 / (5 * w.hidden))


def wang_init(w: Where) -> float:
    """GPT-NeoX's wang_init_method: 2 / (L sqrt(d))."""
    return 2 / w.layers / math.sqrt(w.hidden)


def depth(w: Where) -> float:
    """torchtitan's depth init: σ / sqrt(2 (l + 1)), l the layer index from 0."""
    if w.layer is None:
        raise AssertionError("depth init outside the layer stack")
    return w.sigma / math.sqrt(2 * (w.layer + 1))


def inverse_sqrt_width(w: Where) -> float:
    """d ** -0.5 (torchtitan's output head)."""
    return w.hidden**-0.5


def fan_in(w: Where) -> int:
    """The tensor's fan in, as ``jax.nn.initializers`` computes it from its fan axes."""
    from ..initializers import compute_fans

    return compute_fans(w.shape, *w.fans)[0]


def inverse_sqrt_fan_in(w: Where) -> float:
    """1 / sqrt(fan_in): haliax's Linear at init_scale 1."""
    return fan_in(w) ** -0.5


def inverse_width(w: Where) -> float:
    """1 / d: haliax's Embedding at init_scale 1 (1/d, not 1/sqrt(d))."""
    return 1.0 / w.hidden


# --- Rules ---------------------------------------------------------------------------------


def normal(std: Callable[[Where], float]) -> RuleFn:
    """torch ``normal_(std=s)``: ``jax.nn.initializers.normal(s)``."""
    return lambda w: {"init": "normal", "stddev": std(w)}


def truncated(std: Callable[[Where], float], cut: float) -> RuleFn:
    """A normal of std s cut at ±cut·s: torch ``trunc_normal_(std=s, a=-cut*s, b=cut*s)`` is
    ``jax.nn.initializers.truncated_normal(s, lower=-cut, upper=cut)`` (JAX's bounds are in
    units of the std, torch's are absolute)."""
    return lambda w: {"init": "truncated-normal", "stddev": std(w), "lower": -cut, "upper": cut}


# Beyond this many stds a cut is invisible (a mass under 6e-7), and JAX's inverse-CDF
# truncated normal cannot express it: in float32 erf(5.5 / sqrt(2)) is exactly 1, so
# truncated_normal(s, -100, 100) puts about one value in 8 million at the bound itself.
INVISIBLE_CUT = 5.0


def torch_trunc_normal(std: Callable[[Where], float], a: float = -2.0, b: float = 2.0) -> RuleFn:
    """torch ``trunc_normal_(std=s, a, b)``, whose bounds are absolute: torch's default ±2 is
    ±100σ at s = 0.02, no cut at all, so ``normal(s)``; a bound within 5 s is a real cut,
    ``truncated_normal(s, lower=a/s, upper=b/s)`` (JAX's bounds are in units of s)."""

    def rule(w: Where) -> dict:
        s = std(w)
        lower, upper = a / s, b / s
        if min(-lower, upper) >= INVISIBLE_CUT:
            return {"init": "normal", "stddev": s}
        return {"init": "truncated-normal", "stddev": s, "lower": lower, "upper": upper}

    return rule


def variance_scaling(
    distribution: str, scale: Callable[[Where], float] = lambda w: 1.0, *, experts: bool = False
) -> RuleFn:
    """``jax.nn.initializers.variance_scaling(scale, "fan_in", distribution)`` with the fan
    axes of the tensor's layout on disk, so its fan in is the trainer's whatever the layout.
    ``experts``: MaxText's expert kernels (E, in, out) take in_axis 0 and out_axis 1, so
    JAX's fan in is E x out (moe.py); a per-expert tensor [out, in] gets the same variance
    from its out axis as in_axis and the scale divided by E."""

    def rule(w: Where) -> dict:
        in_axis, out_axis, batch_axis = w.fans
        s = scale(w)
        if experts:
            in_axis, out_axis, s = out_axis, in_axis, s / w.experts
        entry = {
            "init": "variance-scaling",
            "scale": s,
            "mode": "fan_in",
            "distribution": distribution,
            "in_axis": in_axis,
            "out_axis": out_axis,
        }
        if batch_axis != ():
            entry["batch_axis"] = batch_axis
        return entry

    return rule


def zeros(w: Where) -> dict:
    return {"init": "zeros"}


def ones(w: Where) -> dict:
    return {"init": "ones"}


# --- Recipes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheme:
    """One trainer's init of a model: a rule per role. ``tied``: the role whose rule the
    token embedding gets when it is also the output head (the trainer inits the shared
    tensor as its embedding, or as its head). ``pad_row``: the trainer zeroes the embedding
    row at pad_token_id (transformers does; the trainers do not)."""

    roles: Mapping[str, RuleFn]
    tied: str = roles.EMBEDDING
    pad_row: bool = False
    model: str = ""  # the trainer's own model this follows (torchtitan's "llama3", ...)
    # (test, what the trainer's model cannot express): a config the test refuses is refused
    # naming the field (nanotron's llama has no biases and head_dim = hidden / heads).
    requires: tuple[tuple[Callable[[Config], bool], str], ...] = ()

    def rule(self, role: str) -> RuleFn:
        for candidate in roles.lineage(role):
            if candidate in self.roles:
                return self.roles[candidate]
        if roles.base(role) == roles.SPECIAL:
            return KEEP
        raise AssertionError(f"no rule for the role {role!r}")


@dataclass(frozen=True)
class Recipe:
    """A trainer's initialisation, as data. ``scheme`` applies to every family; a recipe
    that follows the trainer's own model per family gives ``models`` (model_type -> scheme)
    instead and refuses the others. ``default_std``: the base std σ when --init-std is not
    given (None: the recipe's formulas take no σ)."""

    name: str
    trainer: str  # whose init it is: "torchtitan 0.3.0"
    summary: str  # one line: --help and the README
    source: str  # the trainer's files and functions it follows
    default_std: Callable[[Config], float] | None
    default_std_text: str  # how the README says it
    scheme: Scheme | None = None
    models: Mapping[str, Scheme] = field(default_factory=dict)
    start: str = ""  # how the trainer starts from the folder (README)
    # Its μP form, for the README and --help (empty: it has none, and --mup-base-width is
    # refused): how a base width W enters the trainer's init.
    mup: str = ""
    # Why --mup-base-width is refused, where the reason is not "no μP form" (a recipe that
    # is μP by construction, with no base width).
    no_base_width: str = ""

    def scheme_for(self, model_type: str) -> Scheme:
        if self.scheme is not None:
            return self.scheme
        scheme = self.models.get(model_type)
        if scheme is None:
            have = {}
            for family, s in self.models.items():
                have.setdefault(s.model, []).append(family)
            known = "; ".join(f"{m} ({', '.join(f)})" for m, f in have.items())
            raise UsageError(
                f"--init {self.name}: {self.trainer} has no model for {model_type} (it has "
                f"{known}); --init megatron, neox and olmo2 apply to every family"
            )
        return scheme

    def check(self, scheme: Scheme, c: Config) -> None:
        """Refuse, in one line, a config the trainer's model cannot express."""
        for test, message in scheme.requires:
            if not test(c):
                what = f"{self.trainer}'s {scheme.model}" if scheme.model else self.trainer
                raise UsageError(
                    f"--init {self.name}: {what} {message.format(**vars(c))}; --init megatron, "
                    "neox and olmo2 apply to every family"
                )

    def base_std(self, c: Config, given: float | None) -> float | None:
        if given is None:
            return self.default_std(c) if self.default_std is not None else None
        if self.default_std is None:
            raise UsageError(
                f"--init-std: the {self.name} recipe takes no base std ({self.default_std_text})"
            )
        return given


def config_std(c: Config) -> float:
    """The config's initializer_range (or 0.02 when absent or 0, as transformers 5 reads it)."""
    return init_std(c)


def check_std(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"--init-std: expected a number, got {value!r}")
    if not (0 < value <= 10 and math.isfinite(value)):
        raise UsageError(f"--init-std {value}: must be a standard deviation above 0, at most 10")
    return float(value)


def check_base_width(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise UsageError(
            f"--mup-base-width: expected the base model's hidden size, an integer from 1 to "
            f"{MAX_INT}, got {value!r}"
        )
    return value


def trainer_fans(t: Built, c: Config) -> tuple[int | None, int | None]:
    """(fan_in, fan_out) of the matrix the trainer holds for ``t``: its fused matrix where
    the family declares one (``Tensor.fused``), else the tensor itself, along the tensor's
    fan axes (batch axes, e.g. experts, left out); (None, None) for a vector."""
    shape = tuple(t.decl.fused(c)) if t.decl.fused is not None else t.shape
    if len(shape) < 2:
        return None, None
    in_axis, out_axis, _ = t.decl.fans

    def size(axes) -> int:
        axes = axes if isinstance(axes, tuple) else (axes,)
        return math.prod(shape[a] for a in axes)

    return size(in_axis), size(out_axis)


def resolve(
    tensors: list[Built],
    scheme: Scheme,
    c: Config,
    *,
    sigma: float | None,
    layers: int,
    hidden: int,
    base_width: int | None = None,
    experts: int = 0,
    head_dim: int | None = None,
) -> dict[str, dict]:
    """name -> spec entry for every tensor: the scheme's rule for its role, or the
    family's own rule where the scheme keeps it."""
    tied = bool(getattr(c, "tie_word_embeddings", False))
    rules: dict[str, RuleFn] = {}
    entries = {}
    for t in tensors:
        role = scheme.tied if t.decl.tied and tied else t.decl.role
        rule = rules.get(role)
        if rule is None:
            rule = rules[role] = scheme.rule(role)
        fan_in, fan_out = trainer_fans(t, c)
        where = Where(
            sigma or 0.0,
            layers,
            hidden,
            t.layer,
            t.shape,
            base_width,
            fan_in,
            fan_out,
            fans=t.decl.fans,
            experts=experts,
            head_dim=head_dim,
        )
        entry = rule(where)
        if entry is None:
            entry = t.decl.rule.entry(c, sigma, pad_row=scheme.pad_row)
        entries[t.name] = entry
    return entries
