"""The registry: one source for commands, list, the spec parser and validation."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import jax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightgen.cli import cli
from weightgen.errors import UsageError
from weightgen.initializers import REGISTRY, compute_fans, lookup

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("entry", list(REGISTRY.values()), ids=lambda e: e.name)
def test_parameters_and_defaults_are_jaxs(entry):
    """Each entry's parameters are the JAX function's arguments, with the same defaults."""
    function = getattr(jax.nn.initializers, entry.jax_name)
    if not entry.jax_builder:
        assert entry.params == ()
        return
    signature = inspect.signature(function)
    jax_params = {n: p.default for n, p in signature.parameters.items() if n != "dtype"}
    assert [p.name for p in entry.params] == list(jax_params)
    for p in entry.params:
        default = jax_params[p.name]
        if default is inspect.Parameter.empty:
            assert p.required, p.name
        else:
            assert p.default == default, p.name


def test_every_jax_initializer_is_registered():
    public = {
        name
        for name in dir(jax.nn.initializers)
        if not name.startswith("_")
        and callable(getattr(jax.nn.initializers, name))
        and name not in ("Initializer",)
    }
    registered = {e.jax_name for e in REGISTRY.values()}
    aliases = {"xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"}
    assert public - aliases == registered
    for alias in aliases:
        assert lookup(alias).jax_name in registered


def test_every_command_is_documented():
    for name in cli.commands:
        assert re.search(rf"\b{re.escape(name)}\b", README), name
    for entry in REGISTRY.values():
        for alias in entry.aliases:
            assert alias.split("-")[0] in README, alias


axes = st.one_of(st.integers(-4, 3), st.lists(st.integers(-4, 3), max_size=2).map(tuple))


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
    in_axis=axes,
    out_axis=axes,
    batch_axis=axes,
)
def test_fans_match_jax(shape, in_axis, out_axis, batch_axis):
    from jax._src.nn.initializers import _compute_fans

    try:
        ours = compute_fans(shape, in_axis, out_axis, batch_axis)
    except UsageError:
        return  # an axis out of range or a 1-D default: JAX would raise too (or index wrongly)
    assert ours == _compute_fans(shape, in_axis, out_axis, batch_axis)


def test_every_transform_has_its_jax_code():
    from weightgen import samplers
    from weightgen.initializers import TRANSFORMS

    assert set(samplers._TRANSFORMS) == set(TRANSFORMS)
