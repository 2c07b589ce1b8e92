"""Quantized checkpoint formats as data: one page each, read by the one quantizer
(quantizer.py). A page says which roles (hf/roles.py) the format quantizes and in which
layout it takes them, the tensors each quantized weight becomes (names, dtypes, shapes), the
band of rows it is quantized in, and the ``quantization_config`` the loader reads. No family
knows a format and no format knows a family's tensor names: the builder (hf/__init__.py)
joins a family's roles with a page.

Sources (checked against transformers 5.24.0, the loader the tests use):
- fp8-block: ``transformers/integrations/finegrained_fp8.py`` (``FP8Linear``: ``weight``
  float8_e4m3fn [out, in] and ``weight_scale_inv`` float32 [⌈out/bn⌉, ⌈in/bk⌉];
  ``_dequantize_fp8_weight``: w · scale_inv, block by block) and
  ``quantizers/quantizer_finegrained_fp8.py``; the config is DeepSeek-V3's, Kimi-K2's and
  Qwen3-*-FP8's published ``quantization_config``. The published checkpoints keep the
  embedding, ``lm_head``, norms, routers and their biases unquantized.
- mxfp4: ``transformers/integrations/mxfp4.py`` (``Mxfp4GptOssExperts``:
  ``{gate_up,down}_proj_blocks`` uint8 [E, out, in/32, 16], ``_scales`` uint8 [E, out,
  in/32]; ``_convert_moe_packed_tensors``: low nibble first, E8M0 scale - 127, then
  transposed back to [E, in, out]); the config is gpt-oss's published one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..hf import roles

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Part:
    """One stored tensor a quantized weight becomes: named ``logical name + suffix``."""

    suffix: str  # "" (the weight keeps its name), "_scale_inv", "_blocks", ...
    dtype: str | Callable[[Mapping[str, Any]], str]  # safetensors code (F8_E4M3, F32, U8)
    shape: Callable[[Shape, Mapping[str, Any]], Shape]  # from the logical shape and params
    # "values" (the quantized data), "scales", "constant" (``value``), or "global": one
    # float32 per weight from its whole draw (ct-nvfp4's global scale), never banded.
    role: str
    # A constant part's contents, from the logical shape (compressed-tensors' weight_shape):
    # written whole, never drawn.
    value: Callable[[Shape], Any] | None = None


@dataclass(frozen=True)
class Format:
    """A quantization format, as data."""

    name: str  # what --quantize takes
    quant_method: str  # the quantization_config's quant_method it writes and reads
    kernel: str  # the quantizer function in kernels.py
    roles: tuple[str, ...]  # the base roles it quantizes (roles.base)
    fans: tuple  # the logical layout it takes (the family's fans: in, out, batch axes)
    ndim: int  # the logical rank it takes
    parts: tuple[Part, ...]
    band_rows: Callable[[Mapping[str, Any]], int]  # rows of axis 0 quantized together
    divides: Callable[[Shape, Mapping[str, Any]], str | None]  # why a shape cannot be taken
    config: Callable[[Mapping[str, Any]], dict]  # the quantization_config it writes
    params: Mapping[str, Any] = field(default_factory=dict)  # parameters and defaults
    kernel_args: Callable[[Mapping[str, Any]], dict] = lambda p: {}  # the kernel's keywords
    transpose: bool = False  # the kernel takes [..., out, in]: swap the last two axes first
    # Sibling modules that share one global scale (names of the last module component), for
    # a format with a "global" part: what the serving engine fuses into one matrix.
    fused: tuple[tuple[str, ...], ...] = ()
    # How far quantization may move a weight's mean and std, relative to its rule's std
    # (inspect's check of a dequantized weight, beyond sampling error).
    std_tolerance: float = 0.01
    description: str = ""


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


LINEAR = (-1, -2, ())  # a torch Linear weight [out, in] (family.TORCH_LINEAR)
EXPERTS_IN_OUT = (-2, -1, (0,))  # fused experts stored [expert, in, out] (gpt_oss)
LINEAR_ROLES = (
    roles.ATTN_IN,
    roles.ATTN_OUT,
    roles.MLP_IN,
    roles.MLP_OUT,
    roles.EXPERT_IN,
    roles.EXPERT_OUT,
)


def _fp8_config(params: Mapping[str, Any]) -> dict:
    return {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": list(params["block"]),
    }


def _fp8_fits(shape: Shape, params: Mapping[str, Any]) -> str | None:
    return None  # a partial block at an edge is scaled by its own absmax (as published)


FP8_BLOCK = Format(
    name="fp8-block",
    quant_method="fp8",
    kernel="fp8_block",
    roles=LINEAR_ROLES,
    fans=LINEAR,
    ndim=2,
    parts=(
        Part("", "F8_E4M3", lambda s, p: s, "values"),
        Part(
            "_scale_inv",
            "F32",
            lambda s, p: (_ceil(s[0], p["block"][0]), _ceil(s[1], p["block"][1])),
            "scales",
        ),
    ),
    band_rows=lambda p: p["block"][0],
    divides=_fp8_fits,
    config=_fp8_config,
    params={"block": (128, 128)},
    kernel_args=lambda p: {"block": tuple(p["block"])},
    description="FP8 E4M3 weights with one float32 scale per 128x128 block (DeepSeek-V3, "
    "Kimi-K2, Qwen3-*-FP8, GLM-4.5-FP8)",
)

MXFP4_GROUP = 32


def _mxfp4_fits(shape: Shape, params: Mapping[str, Any]) -> str | None:
    if shape[-2] % MXFP4_GROUP:
        return f"its input width {shape[-2]} is not a multiple of {MXFP4_GROUP}"
    return None


MXFP4 = Format(
    name="mxfp4",
    quant_method="mxfp4",
    kernel="mxfp4",
    roles=(roles.EXPERT_IN, roles.EXPERT_OUT),
    fans=EXPERTS_IN_OUT,
    ndim=3,
    parts=(
        Part("_blocks", "U8", lambda s, p: (s[0], s[2], s[1] // MXFP4_GROUP, 16), "values"),
        Part("_scales", "U8", lambda s, p: (s[0], s[2], s[1] // MXFP4_GROUP), "scales"),
    ),
    band_rows=lambda p: 1,  # one expert: its groups run along the input axis, axis 1
    divides=_mxfp4_fits,
    config=lambda p: {
        "modules_to_not_convert": list(MXFP4_NOT_CONVERTED),
        "quant_method": "mxfp4",
    },
    transpose=True,
    std_tolerance=0.05,  # 2 mantissa bits, power-of-two group scales
    description="routed experts in MXFP4: two FP4 E2M1 values a byte, one E8M0 scale per "
    "32 (gpt-oss)",
)
MXFP4_NOT_CONVERTED = (
    "model.layers.*.self_attn",
    "model.layers.*.mlp.router",
    "model.embed_tokens",
    "lm_head",
)

SCALE_CODES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def _ct_config(fmt: str, group: dict, **extra: Any) -> dict:
    """A compressed-tensors ``quantization_config`` of one config group, its keys in the
    order compressed-tensors 0.20.0 writes them (``extra``: keys a format adds)."""
    return {
        "config_groups": {"group_0": group},
        "format": fmt,
        "global_compression_ratio": None,
        "ignore": [],
        "kv_cache_scheme": None,
        **extra,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    }


def _minmax_weights(num_bits: int, strategy: str, kind: str, group_size: int | None = None):
    """The ``weights`` arguments llm-compressor's static, symmetric, minmax-observed presets
    write (FP8_DYNAMIC, W4A16)."""
    return {
        "actorder": None,
        "block_structure": None,
        "dynamic": False,
        "group_size": group_size,
        "num_bits": num_bits,
        "observer": "minmax",
        "observer_kwargs": {},
        "strategy": strategy,
        "symmetric": True,
        "type": kind,
    }


def _ct_fp8_config(params: Mapping[str, Any]) -> dict:
    """llm-compressor's FP8_DYNAMIC preset as it writes it (compressed-tensors 0.20.0
    ``QuantizationConfig``): channel-wise FP8 weights, dynamic per-token FP8 activations.
    ``ignore`` is filled in by the builder: the linear layers left unquantized."""
    group = {
        "input_activations": {
            "actorder": None,
            "block_structure": None,
            "dynamic": True,
            "group_size": None,
            "num_bits": 8,
            "observer": None,
            "observer_kwargs": {},
            "strategy": "token",
            "symmetric": True,
            "type": "float",
        },
        "output_activations": None,
        "targets": ["Linear"],
        "weights": _minmax_weights(8, "channel", "float"),
    }
    return _ct_config("float-quantized", group)


# compressed-tensors 0.20.0 ``compressors/quantized_compressors/fp8_quantized.py``
# (``FloatQuantizationCompressor``: ``weight`` F8_E4M3 and ``weight_scale`` [out, 1] in the
# model's dtype) over ``quantization/lifecycle/forward.py``'s channel-wise quantize.
CT_FP8 = Format(
    name="ct-fp8",
    quant_method="compressed-tensors",
    kernel="ct_fp8",
    roles=LINEAR_ROLES,
    fans=LINEAR,
    ndim=2,
    parts=(
        Part("", "F8_E4M3", lambda s, p: s, "values"),
        Part("_scale", lambda p: SCALE_CODES[p["scale_dtype"]], lambda s, p: (s[0], 1), "scales"),
    ),
    band_rows=lambda p: 128,  # any rows: the scales are per row
    divides=lambda s, p: None,
    config=_ct_fp8_config,
    params={"scale_dtype": "bfloat16"},
    kernel_args=lambda p: {"scale_dtype": p["scale_dtype"]},
    description="compressed-tensors float-quantized: FP8 weights with one scale per output "
    "channel, dynamic per-token FP8 activations (llm-compressor's FP8_DYNAMIC)",
)

W4A16_GROUP = 128


def _ct_w4a16_config(params: Mapping[str, Any]) -> dict:
    """llm-compressor's W4A16 preset as it writes it: int4 weights, symmetric, groups of
    128 along the input, activations unquantized."""
    group = {
        "input_activations": None,
        "output_activations": None,
        "targets": ["Linear"],
        "weights": _minmax_weights(4, "group", "int", group_size=W4A16_GROUP),
    }
    return _ct_config("pack-quantized", group)


def _groups_fit(group: int) -> Callable[[Shape, Mapping[str, Any]], str | None]:
    """A format's check that a weight's input width is whole groups of ``group``."""

    def fits(shape: Shape, params: Mapping[str, Any]) -> str | None:
        if shape[-1] % group:
            return f"its input width {shape[-1]} is not a multiple of the group, {group}"
        return None

    return fits


# compressed-tensors 0.20.0 ``compressors/quantized_compressors/pack_quantized.py``
# (``PackedQuantizationCompressor``: ``weight_packed`` int32 [out, in/8], ``weight_scale``
# [out, in/128] in the model's dtype, ``weight_shape`` int64 [2]).
CT_W4A16 = Format(
    name="ct-w4a16",
    quant_method="compressed-tensors",
    kernel="ct_w4a16",
    roles=LINEAR_ROLES,
    fans=LINEAR,
    ndim=2,
    parts=(
        Part("_packed", "I32", lambda s, p: (s[0], s[1] // 8), "values"),
        Part(
            "_scale",
            lambda p: SCALE_CODES[p["scale_dtype"]],
            lambda s, p: (s[0], s[1] // W4A16_GROUP),
            "scales",
        ),
        Part("_shape", "I64", lambda s, p: (2,), "constant", value=lambda s: list(s)),
    ),
    band_rows=lambda p: 128,  # any rows: the groups run along a row
    divides=_groups_fit(W4A16_GROUP),
    config=_ct_w4a16_config,
    params={"scale_dtype": "bfloat16"},
    kernel_args=lambda p: {"group": W4A16_GROUP, "scale_dtype": p["scale_dtype"]},
    std_tolerance=0.03,  # int4: a step of a group's absmax / 7.5
    description="compressed-tensors pack-quantized: int4 weights packed eight to an int32, "
    "symmetric, one scale per 128 (llm-compressor's W4A16)",
)

NVFP4_GROUP = 16


def _ct_nvfp4_config(params: Mapping[str, Any]) -> dict:
    """llm-compressor's NVFP4A16 preset as compressed-tensors 0.20.0 writes it
    (``QuantizationConfig(...).to_dict()``): FP4 weights in groups of 16 with FP8 group
    scales and one float32 global scale, activations unquantized. The W4A4 preset (NVFP4)
    would need a calibrated ``input_global_scale`` per layer: random weights have none."""
    group = {
        "format": None,
        "input_activations": None,
        "output_activations": None,
        "targets": ["Linear"],
        "weights": {
            "dynamic": False,
            "group_size": NVFP4_GROUP,
            "num_bits": 4,
            "scale_dtype": "torch.float8_e4m3fn",
            "strategy": "tensor_group",
            "symmetric": True,
            "type": "float",
        },
    }
    return _ct_config("nvfp4-pack-quantized", group, moe_sparsity_config=None)


# compressed-tensors 0.20.0 ``compressors/nvfp4/base.py`` (``NVFP4PackedCompressor``:
# ``weight_packed`` uint8 [out, in/2], ``weight_scale`` float8_e4m3fn [out, in/16],
# ``weight_global_scale`` float32 [1]). The global scale is 448·6 / absmax of the whole
# weight (``generate_gparam``); llm-compressor (``modifiers/utils/helpers.py``,
# ``update_fused_layer_weight_global_scales``) gives q/k/v, MLA's q_a/kv_a and gate/up one
# global scale, their minimum, "a requirement currently being set by vLLM" (it fuses them).
CT_NVFP4 = Format(
    name="ct-nvfp4",
    quant_method="compressed-tensors",
    kernel="ct_nvfp4",
    roles=LINEAR_ROLES,
    fans=LINEAR,
    ndim=2,
    parts=(
        Part("_packed", "U8", lambda s, p: (s[0], s[1] // 2), "values"),
        Part("_scale", "F8_E4M3", lambda s, p: (s[0], s[1] // NVFP4_GROUP), "scales"),
        Part("_global_scale", "F32", lambda s, p: (1,), "global"),
    ),
    band_rows=lambda p: 128,  # any rows: the groups run along a row
    divides=_groups_fit(NVFP4_GROUP),
    config=_ct_nvfp4_config,
    fused=(
        ("q_proj", "k_proj", "v_proj"),
        ("q_a_proj", "kv_a_proj_with_mqa"),
        ("gate_proj", "up_proj"),
    ),
    std_tolerance=0.05,  # 2 mantissa bits; FP8 group scales
    description="compressed-tensors nvfp4-pack-quantized: FP4 E2M1 weights two a byte, one "
    "FP8 scale per 16 and a float32 global scale (llm-compressor's NVFP4A16)",
)

FORMATS: dict[str, Format] = {f.name: f for f in (FP8_BLOCK, MXFP4, CT_FP8, CT_W4A16, CT_NVFP4)}
PUBLISHED = "published"  # --quantize published: the format the config's own names


def band_elems(fmt: Format, shape: Shape, params: Mapping[str, Any]) -> int:
    """Logical elements in one band of rows (the last band may hold fewer)."""
    return fmt.band_rows(params) * math.prod(shape[1:])
