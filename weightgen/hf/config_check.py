"""What a config.json says beyond the fields a family reads: keys transformers does not know
(typos among them), and size fields left to the config class's default.

The keys transformers knows come from its own config classes, in both pinned releases,
read once by ``scripts/gen_config_keys.py`` into ``config_keys.json`` (so transformers is
not needed here): per family, the config class's fields; for every family,
``PreTrainedConfig``'s; and every ``attribute_map`` pair of every config class (``n_layer``
and ``num_hidden_layers``), which is how a near-miss is recognised.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .family import Family

DATA = Path(__file__).with_name("config_keys.json")
# A key this close to a field's name (difflib's ratio) is a typo of it: hiden_size,
# num_hidden_layer, intermediate_dim.
TYPO_RATIO = 0.75


@functools.cache
def _data() -> dict[str, Any]:
    return json.loads(DATA.read_text(encoding="utf-8"))


@functools.cache
def _linked() -> dict[str, frozenset[str]]:
    """Each name to the other names some config class gives the same field."""
    linked: dict[str, set[str]] = {}
    for a, b in _data()["synonyms"]:
        linked.setdefault(a, set()).add(b)
        linked.setdefault(b, set()).add(a)
    return {k: frozenset(v) for k, v in linked.items()}


def class_name(family: Family) -> str:
    return _data()["families"][family.model_type]["class"]


def versions() -> str:
    return " and ".join(_data()["transformers"])


def read_keys(family: Family) -> set[str]:
    """The keys the family's shapes read (fields and their other spellings)."""
    return {n for f in family.fields for n in (f.name, *f.aliases)}


def known_keys(family: Family) -> set[str]:
    """Every key a config of this family may carry: read by weightgen, or a field of the
    config class or of PreTrainedConfig in a pinned transformers."""
    data = _data()
    return (
        read_keys(family)
        | set(data["common"])
        | set(data["families"][family.model_type]["keys"])
        | {key for key, _ in family.fixed}
    )


def unknown_keys(config: Mapping[str, Any], family: Family) -> list[str]:
    known = known_keys(family)
    return [key for key in config if key not in known]


def meant(key: str, family: Family, config: Mapping[str, Any]) -> str | None:
    """The field ``key`` is a near-miss of, when the config leaves that field unset: another
    spelling some config class uses for it (``num_layers``, ``n_layer``, ``hidden_dim``), or
    a typo of its name."""
    unset = {f.name: f for f in family.fields if not any(n in config for n in (f.name, *f.aliases))}
    for other in sorted(_linked().get(key, ())):
        for name, item in unset.items():
            if other in (name, *item.aliases):
                return name
    close = difflib.get_close_matches(key, list(unset), n=1, cutoff=TYPO_RATIO)
    return close[0] if close else None


def defaults_taken(config: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """The size fields (integers with a class default) the config leaves to that default:
    each is a guess about the model that nobody wrote down."""
    return {
        f.name: f.default
        for f in family.fields
        if f.kind == "int"
        and f.default is not None
        and not any(n in config for n in (f.name, *f.aliases))
    }


@dataclass
class Report:
    unknown: list[str]  # keys neither read nor known to transformers, copied through
    defaults: dict[str, Any]  # size fields left to the class default, with that default
    config_class: str


def check(
    config: Mapping[str, Any], family: Family, *, strict: bool = False, where: str = "config.json"
) -> Report:
    """Refuse a near-miss of a field the family reads (always), and with ``strict`` any
    unknown key or size field left to its default; else report them."""
    cls = class_name(family)
    unknown = unknown_keys(config, family)
    for key in unknown:
        field = meant(key, family, config)
        if field is not None:
            raise UsageError(
                f"{where}: {key} is not a {family.model_type} field; did you mean {field}? "
                f"({cls} reads {field}; without it {field} would take "
                f"{_default_text(family, field, cls)})"
            )
    defaults = defaults_taken(config, family)
    if strict and unknown:
        it = "them" if len(unknown) > 1 else "it"
        raise UsageError(
            f"{where}: {', '.join(unknown)} {_not_fields(unknown)} of {cls} (transformers "
            f"{versions()}) nor read by weightgen; remove {it}, or drop --strict to copy "
            f"{it} to config.json as given"
        )
    if strict and defaults:
        name, value = next(iter(defaults.items()))
        raise UsageError(
            f"{where}: {name} not set (--strict): it would take {value}, the {cls} default; "
            "set it in the config"
        )
    return Report(unknown, defaults, cls)


def _default_text(family: Family, name: str, cls: str) -> str:
    item = next(f for f in family.fields if f.name == name)
    if item.default is not None:
        return f"{item.default}, the {cls} default"
    return "the value derived from the other fields"


def notes(report: Report, where: str = "config.json") -> list[str]:
    """One line for each default taken, one for the unknown keys."""
    lines = [
        f"note: {name} not set: {value}, the {report.config_class} default"
        for name, value in report.defaults.items()
    ]
    if report.unknown:
        it = "them" if len(report.unknown) > 1 else "it"
        lines.append(
            f"note: {where}: {', '.join(report.unknown)} {_not_fields(report.unknown)} of "
            f"{report.config_class} (transformers {versions()}) nor read by weightgen; "
            f"copied to config.json as given (--strict refuses {it})"
        )
    return lines


def _not_fields(keys: list[str]) -> str:
    return "are not fields" if len(keys) > 1 else "is not a field"
