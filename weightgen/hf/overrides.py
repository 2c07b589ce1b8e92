"""``--rule 'GLOB=INIT[,param=value...]'``: one tensor's (or many tensors') init, set by hand.

Rules apply after the recipe, in order, the later winning. INIT is any weightgen initializer
with its parameters as in spec files (JAX's argument names), ``zero_rows`` and ``transform``.
Values are JSON where they parse as JSON (``stddev=0.01``, ``in_axis=[0,1]``,
``transform={"name":"log","offset":0.01}``), else strings (``mode=fan_in``,
``transform=log``). Fan-based initializers (he-normal, lecun-normal, variance-scaling, ...)
take the tensor's own fan axes unless the rule gives axes: ``[out, in]`` for torch's Linear
(fan in = the last axis), as each family declares.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import initializers
from ..errors import UsageError
from ..initializers import AppliedTransform, Initializer, format_shape
from ..plan import parse_zero_rows
from .family import Built

FAN_AXES = ("in_axis", "out_axis", "batch_axis")
EXTRA_KEYS = ("zero_rows", "transform")  # spec keys a rule may set beside the parameters
MAX_RULES = 1000


@dataclass(frozen=True)
class Override:
    text: str  # as given: messages and the manifest
    pattern: str
    init: Initializer
    params: Mapping[str, Any]  # the parameters given, validated
    zero_rows: Any = None
    transform: AppliedTransform | None = None

    def entry(self, tensor: Built) -> dict:
        """The spec entry for a tensor this rule matches, checked against its shape."""
        params = dict(self.params)
        hint = ""
        if self.init.family == "variance_scaling" and not FAN_AXES & params.keys():
            params.update(zip(FAN_AXES, tensor.decl.fans, strict=True))
            hint = (
                " (the fan axes are this tensor's own layout's: narrow the GLOB to the "
                "matrices, or give in_axis/out_axis)"
            )
        where = f"--rule {self.text!r}: tensor {tensor.name!r} {format_shape(tensor.shape)}: "
        resolved = self.init.resolve_params(params, where=where)
        try:
            initializers.check_shape(self.init, resolved, tensor.shape)
            if self.zero_rows is not None:
                parse_zero_rows(self.zero_rows, tensor.shape, label="zero_rows")
            if self.transform is not None:
                initializers.check_transform(self.init, resolved, self.transform)
        except UsageError as exc:
            raise UsageError(f"{where}{exc}{hint}") from None
        entry: dict[str, Any] = {"init": self.init.name}
        entry.update({k: list(v) if isinstance(v, tuple) else v for k, v in params.items()})
        if self.zero_rows is not None:
            entry["zero_rows"] = self.zero_rows
        if self.transform is not None:
            entry["transform"] = self.transform.as_json()
        return entry


def parse(text: str) -> Override:
    """``'*.o_proj.weight=zeros'`` or ``'model.embed_tokens.weight=normal,stddev=1.0'``."""
    if not isinstance(text, str):
        raise UsageError(f"--rule: expected 'GLOB=INIT[,param=value...]', got {text!r}")
    label = f"--rule {text!r}"
    pattern, sep, rest = text.partition("=")
    pattern = pattern.strip()
    if not sep or not pattern or not rest.strip():
        raise UsageError(
            f"{label}: expected GLOB=INIT[,param=value...], e.g. '*.o_proj.weight=zeros'"
        )
    name, *pairs = _split(rest)
    try:
        init = initializers.lookup(name.strip())
    except UsageError as exc:
        raise UsageError(f"{label}: {exc}") from None
    accepted = {p.name for p in init.params}
    given: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise UsageError(f"{label}: expected param=value, got {pair.strip()!r}")
        if key not in accepted and key not in EXTRA_KEYS:
            raise UsageError(
                f"{label}: {init.name} has no parameter {key!r} (it accepts: "
                f"{', '.join(sorted(accepted | set(EXTRA_KEYS)))})"
            )
        if key in given:
            raise UsageError(f"{label}: {key} is given twice")
        given[key] = _value(value.strip())
    zero_rows = given.pop("zero_rows", None)
    if zero_rows is not None and (
        not isinstance(zero_rows, list)
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in zero_rows)
    ):
        raise UsageError(f"{label}: zero_rows must be a list of row indices such as [0]")
    transform = initializers.parse_transform(given.pop("transform", None), where=f"{label}: ")
    # Parameters alone (no shape yet): required ones present, values of the right kind.
    params = {k: _normalised(init, k, v, label) for k, v in given.items()}
    missing = [p.flag[2:] for p in init.params if p.required and p.name not in params]
    if missing:
        raise UsageError(f"{label}: {init.name} needs {', '.join(missing)}")
    return Override(text, pattern, init, params, zero_rows, transform)


def apply(overrides: Iterable[Override], tensors: list[Built], entries: dict[str, dict]) -> None:
    """Each rule, in order, on every tensor its glob matches (a later rule wins); a rule that
    matches nothing is an error naming it."""
    for rule in overrides:
        regex = re.compile(fnmatch.translate(rule.pattern))
        matched = [t for t in tensors if regex.match(t.name)]
        if not matched:
            raise UsageError(
                f"--rule {rule.text!r}: {rule.pattern!r} matches no tensor of this model (a "
                "GLOB matches whole names and * crosses dots, e.g. '*.o_proj.weight'; "
                "weightgen hf CONFIG --spec lists them)"
            )
        for tensor in matched:
            entries[tensor.name] = rule.entry(tensor)


def parse_all(texts: Iterable[str] | None) -> list[Override]:
    texts = list(texts or ())
    if len(texts) > MAX_RULES:
        raise UsageError(f"--rule: at most {MAX_RULES} rules")
    return [parse(t) for t in texts]


def _split(text: str) -> list[str]:
    """Split at commas outside brackets and braces: ``normal,stddev=1``,
    ``he-normal,in_axis=[0,1]``, ``uniform,transform={"name":"log","offset":0.01}``."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "[({":
            depth += 1
        elif char in "])}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _normalised(init: Initializer, key: str, value: Any, label: str) -> Any:
    param = next(p for p in init.params if p.name == key)
    return param.convert(value, where=f"{label}: ")
