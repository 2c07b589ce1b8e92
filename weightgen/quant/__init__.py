"""Quantized checkpoints: the one quantizer that reads the format pages (formats.py).

A quantized weight is one logical tensor (its init rule, its logical shape, drawn in
float32) that becomes the stored tensors its format's page names (``weight`` F8_E4M3 and
``weight_scale_inv``; ``_blocks`` and ``_scales``). It is quantized a band of whole blocks of
rows at a time (``quantize_band``), so no more than a band is ever in memory, and every
stored byte is a function of the draw alone: the same on any chunk size, device or process
count. The kernels themselves (absmax scales, round to nearest even, saturating; pure numpy,
so they are the same on every backend) live in kernels.py, the reference; jitted.py has the
same kernels in XLA, byte for byte, which the engine runs on the device after each band's draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dtypes import DType, from_safetensors_code
from ..errors import UsageError
from .formats import FORMATS, PUBLISHED, Format, Part

__all__ = ["FORMATS", "PUBLISHED", "Scheme", "names", "published", "scheme_of"]


@dataclass(frozen=True)
class Scheme:
    """A format with its parameters resolved: what a spec's top-level ``quantize`` says."""

    format: Format
    params: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs; tuples for lists

    @property
    def name(self) -> str:
        return self.format.name

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.params)

    def as_json(self) -> dict[str, Any]:
        return {"format": self.name, **{k: _jsonable(v) for k, v in self.params}}

    def config(self) -> dict[str, Any]:
        """The quantization_config a loader reads for this scheme."""
        return self.format.config(self.values)

    def takes(self, role: str, fans: tuple, shape: tuple[int, ...]) -> bool:
        """Whether this format quantizes a tensor of ``role``, layout ``fans``, ``shape``."""
        return (
            role.split(".", 1)[0] in self.format.roles
            and tuple(fans) == self.format.fans
            and len(shape) == self.format.ndim
        )

    def check(self, name: str, shape: tuple[int, ...], where: str = "") -> None:
        """Refuse a shape the format cannot store; ``where`` prefixes the message (a spec
        entry's place), else it names the --quantize option."""
        why = self.format.divides(shape, self.values)
        if why is not None:
            where = where or f"--quantize {self.name}: tensor {name!r}"
            raise UsageError(f"{where} {list(shape)}: {why}")

    def stored(self, name: str, shape: tuple[int, ...]) -> list[tuple[str, tuple, DType, Part]]:
        """(stored name, shape, dtype, part) of every tensor ``name`` becomes, in part order."""
        values = self.values
        return [
            (name + p.suffix, tuple(p.shape(shape, values)), self.dtype(p), p)
            for p in self.format.parts
        ]

    def dtype(self, part: Part) -> DType:
        code = part.dtype if isinstance(part.dtype, str) else part.dtype(self.values)
        return _dtype(code)

    def band_rows(self) -> int:
        return self.format.band_rows(self.values)

    def band_elems(self, shape: tuple[int, ...]) -> int:
        """Logical elements of one whole band."""
        return self.band_rows() * math.prod(shape[1:])

    def part_band_elems(self, part: Part, shape: tuple[int, ...]) -> int:
        """Stored elements of ``part`` one whole band makes (bands lie in order in a part)."""
        return math.prod(part.shape((self.band_rows(), *shape[1:]), self.values))

    def bands(self, shape: tuple[int, ...]) -> int:
        return -(-shape[0] // self.band_rows()) if shape and shape[0] else 0

    @property
    def has_global(self) -> bool:
        """Whether each weight has a global part (ct-nvfp4's global scale), made from the
        whole tensor's draw: a first pass (``global_scale``) before its bands."""
        return any(p.role == "global" for p in self.format.parts)

    def global_scale(self, absmax: float) -> np.float32:
        """The global part of a weight (or of a fused group) whose draw's absolute
        maximum is ``absmax`` (the maximum over the group: its minimum global scale)."""
        from . import kernels

        return kernels.nvfp4_global_scale(absmax)

    def quantize_band(
        self, band: np.ndarray, global_scale: np.float32 | None = None
    ) -> dict[str, np.ndarray]:
        """The stored parts of one band of logical rows (float32), by suffix, flat; a format
        with a global part takes the weight's ``global_scale``."""
        from . import kernels

        data = np.ascontiguousarray(np.swapaxes(band, -1, -2)) if self.format.transpose else band
        kernel = getattr(kernels, self.format.kernel)
        args = self.format.kernel_args(self.values)
        if self.has_global:
            if global_scale is None:
                raise ValueError(f"{self.name}: a band needs its weight's global scale")
            args = {**args, "global_scale": global_scale}
        out = kernel(data, **args)
        drawn = [p for p in self.format.parts if p.role not in ("constant", "global")]
        return {p.suffix: np.ascontiguousarray(a).reshape(-1) for p, a in zip(drawn, out)}

    def constant(self, part: Part, shape: tuple[int, ...]) -> np.ndarray:
        """A constant part's contents (flat), in its stored dtype."""
        return np.asarray(part.value(shape), self.dtype(part).numpy).reshape(-1)

    def dequantize(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """weightgen's own dequantization of stored ``parts`` (by suffix) to float32 in the
        logical shape: what a loader computes from the same bytes."""
        return _DEQUANTIZE[self.format.kernel](self, parts, shape)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _dtype(code: str) -> DType:
    found = from_safetensors_code(code)
    assert found is not None, code
    return found


def names() -> list[str]:
    """What --quantize takes."""
    return [*FORMATS, PUBLISHED]


def scheme_of(value: Any, *, where: str = "--quantize") -> Scheme:
    """A Scheme from a format name or a spec's ``{"format": NAME, ...parameters}``."""
    if isinstance(value, str):
        value = {"format": value}
    if not isinstance(value, dict) or not isinstance(value.get("format"), str):
        raise UsageError(f'{where}: expected {{"format": NAME, ...}}, got {value!r}')
    fmt = FORMATS.get(value["format"])
    if fmt is None:
        raise UsageError(
            f"{where}: unknown format {value['format']!r}; the formats are {', '.join(FORMATS)}"
        )
    params = dict(fmt.params)
    for key, given in value.items():
        if key == "format":
            continue
        if key not in fmt.params:
            allowed = ", ".join(fmt.params) or "none"
            raise UsageError(
                f"{where}: {fmt.name} has no parameter {key!r} (its parameters: {allowed})"
            )
        params[key] = _check_param(fmt, key, given, where)
    return Scheme(fmt, tuple(sorted(params.items())))


def _check_param(fmt: Format, key: str, value: Any, where: str) -> Any:
    if key == "scale_dtype":
        from .formats import SCALE_CODES

        if value not in SCALE_CODES:
            raise UsageError(
                f"{where}: {fmt.name} scale_dtype must be one of {', '.join(SCALE_CODES)}, "
                f"got {value!r}"
            )
        return value
    if key == "block":
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value
            )
        ):
            raise UsageError(
                f"{where}: {fmt.name} block must be two integers from 1 to 4096, got {value!r}"
            )
        return tuple(value)
    return value


def published(config: Mapping[str, Any]) -> Scheme:
    """The scheme a config's own ``quantization_config`` names (``--quantize published``)."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        raise UsageError(
            "--quantize published: config.json has no quantization_config; name a format "
            f"instead ({', '.join(FORMATS)})"
        )
    method = qc.get("quant_method")
    if method == "fp8":
        if qc.get("fmt", "e4m3") != "e4m3" or qc.get("activation_scheme", "dynamic") != "dynamic":
            raise UsageError(
                "--quantize published: weightgen writes fp8 with fmt e4m3 and dynamic "
                f"activations; this config asks for fmt {qc.get('fmt')!r}, activation_scheme "
                f"{qc.get('activation_scheme')!r}"
            )
        block = qc.get("weight_block_size")
        if block is None:
            raise UsageError(
                "--quantize published: per-tensor fp8 (no weight_block_size) is not written; "
                "use --quantize fp8-block"
            )
        return scheme_of({"format": "fp8-block", "block": block}, where="quantization_config")
    if method == "mxfp4":
        return scheme_of("mxfp4")
    if method == "compressed-tensors":
        return _compressed_tensors(qc, config)
    raise UsageError(
        f"--quantize published: quantization_config's quant_method {method!r} is not one "
        f"weightgen writes ({', '.join(sorted({f.quant_method for f in FORMATS.values()}))})"
    )


def _compressed_tensors(qc: Mapping[str, Any], config: Mapping[str, Any]) -> Scheme:
    """ct-fp8, ct-w4a16 or ct-nvfp4, when a compressed-tensors config's one group of weights
    is what llm-compressor's FP8_DYNAMIC, W4A16 or NVFP4A16 preset writes; the ct-fp8 and
    ct-w4a16 scales in the model's dtype (NVFP4's are FP8)."""
    groups = qc.get("config_groups")
    weights = None
    if isinstance(groups, dict) and len(groups) == 1:
        (group,) = groups.values()
        weights = group.get("weights") if isinstance(group, dict) else None
    weights = weights if isinstance(weights, dict) else {}
    shape = (
        qc.get("format"),
        weights.get("type"),
        weights.get("num_bits"),
        weights.get("strategy"),
        weights.get("symmetric"),
    )
    dtype = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    scale_dtype = dtype if dtype in ("bfloat16", "float16", "float32") else "bfloat16"
    if shape == ("float-quantized", "float", 8, "channel", True):
        return scheme_of({"format": "ct-fp8", "scale_dtype": scale_dtype})
    if shape == ("pack-quantized", "int", 4, "group", True) and weights.get("group_size") == 128:
        return scheme_of({"format": "ct-w4a16", "scale_dtype": scale_dtype})
    if (
        shape == ("nvfp4-pack-quantized", "float", 4, "tensor_group", True)
        and weights.get("group_size") == 16
    ):
        (group,) = groups.values()
        activations = group.get("input_activations")
        if isinstance(activations, dict) and activations.get("dynamic") is not True:
            raise UsageError(
                "--quantize published: this NVFP4 config quantizes activations with a "
                "calibrated input_global_scale per layer (llm-compressor's NVFP4 preset), "
                "which random weights cannot have; use --quantize ct-nvfp4 (NVFP4A16: FP4 "
                "weights, activations unquantized)"
            )
        return scheme_of("ct-nvfp4")
    raise UsageError(
        "--quantize published: this compressed-tensors config (format "
        f"{qc.get('format')!r}, weights {weights.get('type')!r} {weights.get('num_bits')!r} "
        f"bits, strategy {weights.get('strategy')!r}) is not one weightgen writes; it writes "
        "ct-fp8 (float-quantized, channel), ct-w4a16 (pack-quantized, int4, group 128) and "
        "ct-nvfp4 (nvfp4-pack-quantized, FP4, group 16)"
    )


# --- weightgen's own dequantization (inspect, and the tests' comparison with loaders) -----


def _dequantize_fp8(scheme: Scheme, parts, shape) -> np.ndarray:
    import ml_dtypes

    from .kernels import dequantize_fp8_block

    block = scheme.values["block"]
    grid = tuple(-(-n // b) for n, b in zip(shape, block))
    q = np.asarray(parts[""]).view(ml_dtypes.float8_e4m3fn).reshape(shape)
    scale = np.asarray(parts["_scale_inv"], np.float32).reshape(grid)
    return dequantize_fp8_block(q, scale, tuple(block))


def _dequantize_mxfp4(scheme: Scheme, parts, shape) -> np.ndarray:
    from .kernels import MXFP4_GROUP, dequantize_mxfp4

    experts, inner, outer = shape
    groups = inner // MXFP4_GROUP
    blocks = np.asarray(parts["_blocks"], np.uint8).reshape(experts, outer, groups, 16)
    scales = np.asarray(parts["_scales"], np.uint8).reshape(experts, outer, groups)
    return np.ascontiguousarray(dequantize_mxfp4(blocks, scales).transpose(0, 2, 1))


def _dequantize_ct_fp8(scheme: Scheme, parts, shape) -> np.ndarray:
    import ml_dtypes

    from .kernels import dequantize_ct_fp8

    q = np.asarray(parts[""]).view(ml_dtypes.float8_e4m3fn).reshape(shape)
    scale_dtype = scheme.dtype(scheme.format.parts[1]).numpy
    scale = np.asarray(parts["_scale"]).view(scale_dtype).reshape(shape[0], 1)
    return dequantize_ct_fp8(q, scale)


def _dequantize_ct_w4a16(scheme: Scheme, parts, shape) -> np.ndarray:
    from .kernels import dequantize_ct_w4a16

    rows, cols = shape
    scale_dtype = scheme.dtype(scheme.format.parts[1]).numpy
    packed = np.asarray(parts["_packed"]).view(np.int32).reshape(rows, cols // 8)
    scale = np.asarray(parts["_scale"]).view(scale_dtype).reshape(rows, -1)
    return dequantize_ct_w4a16(packed, scale)


def _dequantize_ct_nvfp4(scheme: Scheme, parts, shape) -> np.ndarray:
    import ml_dtypes

    from .kernels import NVFP4_GROUP, dequantize_ct_nvfp4

    rows, cols = shape
    packed = np.asarray(parts["_packed"]).view(np.uint8).reshape(rows, cols // 2)
    scale = np.asarray(parts["_scale"]).view(ml_dtypes.float8_e4m3fn)
    global_scale = np.asarray(parts["_global_scale"]).view(np.float32).reshape(-1)[0]
    return dequantize_ct_nvfp4(packed, scale.reshape(rows, cols // NVFP4_GROUP), global_scale)


_DEQUANTIZE = {
    "ct_nvfp4": _dequantize_ct_nvfp4,
    "ct_w4a16": _dequantize_ct_w4a16,
    "fp8_block": _dequantize_fp8,
    "mxfp4": _dequantize_mxfp4,
    "ct_fp8": _dequantize_ct_fp8,
}


def invalid_scales(scheme: Scheme, suffix: str, data: np.ndarray) -> int:
    """How many scales of a stored part are invalid (not finite and positive; E8M0 byte
    0xFF): what a serving kernel would choke on. 0 for a part that holds no scales."""
    from . import kernels

    part = next(p for p in scheme.format.parts if p.suffix == suffix)
    return kernels.invalid_scales(data) if part.role in ("scales", "global") else 0
