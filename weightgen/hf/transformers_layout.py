"""The one door to torch and transformers (``weightgen hf --from-transformers``): the tensors
``save_pretrained`` would write for a config, with their shapes, dtypes and init, read from
the model transformers builds on torch's meta device (no memory, no weights).

Checked against transformers 5.24.0 and 4.57.6 with torch 2.13 (CPU). Imported only when the
flag is used; nothing else in weightgen imports torch or transformers. What it relies on:

- the model: ``PreTrainedModel._from_config(config, dtype=)`` under ``torch.device("meta")``
  (the dtype it keeps per tensor is the one save_pretrained writes: fp32-kept modules too);
- the names: ``state_dict()`` less ``_keys_to_ignore_on_save``, less tied duplicates
  (5.x ``modeling_utils.remove_tied_weights_from_state_dict``; 4.x ``_get_tied_weight_keys``
  and the rule inline in its save_pretrained), then 5.x
  ``core_model_loading.revert_weight_conversion`` (MoE experts fused in memory, saved one
  tensor per expert) or 4.x ``_fix_state_dict_keys_on_save``;
- the init: every write to a tensor's storage while the model is built and initialised,
  recorded by a ``TorchFunctionMode`` (tensor methods: ``normal_``, ``zero_``, ``fill_``,
  ``copy_``, ...; the factories that make a tensor: ``torch.empty``, ``torch.zeros``, ...;
  ``torch.nn.init``'s ``normal_``, ``uniform_``, ``constant_`` and ``kaiming_uniform_``,
  which hand themselves to the mode by name) and by wrappers put in place of the
  ``torch.nn.init`` functions (``trunc_normal_``, ``orthogonal_``, ``sparse_`` and ``dirac_``
  do nothing on the meta device in torch 2.13, so they are recorded as called) in
  ``torch.nn.init`` and the torch modules that import them by name, and, in 5.x, in
  ``transformers.initialization.TORCH_INIT_FUNCTIONS``, the table its own ``init.normal_``
  & co. call. 5.x skips init on the meta device: the model is built with its ties undone
  (``PreTrainedModel.tie_weights`` a no-op), then ``initialize_weights()`` and
  ``tie_weights()`` run as ``init_weights`` runs them off the meta device. 4.x initialises
  while it builds, on any device. A storage is known by ``UntypedStorage._cdata``. Tensors
  a constructor makes on the CPU whatever the device are recorded and really initialised.

The last write to a tensor decides. A write to whole rows of zeros (the embedding's pad row,
zeroed through a view) becomes ``zero_rows``. A symmetric ``uniform_(-b, b)`` on 2 or more
dimensions (``kaiming_uniform_``, ``xavier_uniform_``) is JAX's uniform variance scaling
with torch's fans. Any other partial write, a call with no jax initializer
(``uniform_(a, b)`` with a != 0 otherwise, a normal with a mean, a copy of computed values),
or no write at all (``torch.empty``) is a problem, reported with the call.
Small computations on constants are run again on the CPU to read their value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from torch.overrides import TorchFunctionMode

from ..errors import UsageError
from . import from_transformers
from .torch_init import (
    COMPUTED,
    EMPTY,
    NOTHING,
    ONES,
    ZEROS,
    Map,
    Write,
    constant,
    finish,
    fold,
    mapped,
    normal,
    orthogonal,
    trunc_normal,
    uniform,
    variance_scaling,
)

CHECKED = "transformers 5.24.0 and 4.57.6, torch 2.13"  # what the tests run it with
OLDEST = (4, 57)  # _from_config(dtype=) and the save-time key conversions this module reads
TORCH_LINEAR = (-1, -2, ())  # fan axes (in, out, batch) of a torch Linear weight [out, in]
TORCH_CONV = (1, 0, ())  # of a conv weight [out, in, *kernel]: torch's fans, kernel included
CONV1D = (-2, -1, ())  # transformers' Conv1D stores its weight [in, out]
MAX_VALUES = 1 << 16  # a torch.tensor(data) literal read back to see whether it is constant


@dataclass(frozen=True)
class Saved:
    """One tensor save_pretrained writes: its spec entry (an initializer, its parameters,
    zero_rows) or, when no jax initializer expresses transformers' init, the problem."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    entry: dict | None
    problem: str | None
    fans: tuple = TORCH_LINEAR


@dataclass(frozen=True)
class Layout:
    version: str  # transformers'
    architecture: str  # the class built, written to config.json's architectures
    config: dict  # every field of the config transformers built (class defaults included)
    tensors: list[Saved]


def _version(text: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as '4.57.6' or '5.0.0.dev0'."""
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:2]]
    return tuple(parts + [0] * (2 - len(parts)))


def read(config: dict, dtype: str) -> Layout:
    """The layout and init of the model transformers builds from ``config`` in ``dtype``."""
    with _quiet():
        return _read(config, dtype)


def _read(config: dict, dtype: str) -> Layout:
    version = _version(transformers.__version__)
    if version < OLDEST:
        raise UsageError(
            f"--from-transformers needs transformers {OLDEST[0]}.{OLDEST[1]} or later (it was "
            f"checked with {CHECKED}); {transformers.__version__} is installed: "
            f"{from_transformers.INSTALL}"
        )
    major = version[0]
    built_config = _config(config)
    cls, model_config = _model_class(config, built_config)
    recorder = _Recorder()
    try:
        with torch.device("meta"), _init_functions(recorder), recorder:
            if major >= 5:
                with _untied():
                    model = cls._from_config(model_config, dtype=getattr(torch, dtype))
                model.initialize_weights()  # what init_weights does off the meta device
                model.tie_weights()
            else:
                model = cls._from_config(model_config, dtype=getattr(torch, dtype))
    except (UsageError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise UsageError(
            f"transformers {transformers.__version__} could not build {cls.__name__} from "
            f"this config on the meta device: {_one_line(exc)}"
        ) from None
    try:
        saved, owners = _saved(model, major)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(
            f"transformers {transformers.__version__} could not list the tensors "
            f"save_pretrained writes for {cls.__name__}: {_one_line(exc)}"
        ) from None
    tensors = []
    for name, (tensor, sources, same) in saved.items():
        entry, problem = _combine(name, sources, same, recorder, owners)
        fans = owners[sources[0]][1] if same else TORCH_LINEAR
        tensors.append(
            Saved(
                name,
                tuple(int(d) for d in tensor.shape),
                str(tensor.dtype).removeprefix("torch."),
                entry,
                problem,
                fans,
            )
        )
    return Layout(
        transformers.__version__,
        cls.__name__,
        _written_config(built_config),
        tensors,
    )


# --- the config and the class ---------------------------------------------------------------


def _config(config: dict):
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise UsageError(
            f"config.json: model_type {model_type!r} is not one transformers "
            f"{transformers.__version__} knows"
        )
    try:
        return CONFIG_MAPPING[model_type].from_dict(dict(config))
    except Exception as exc:
        raise UsageError(
            f"config.json: transformers {transformers.__version__} refused it: {_one_line(exc)}"
        ) from None


def _model_class(config: dict, built_config) -> tuple[type, Any]:
    """The class to build and the config to build it from: the config's ``architectures[0]``
    if transformers has it for this config, else the causal-LM class transformers maps the
    model type to; a class of a composite config's text part gets that part, as
    ``AutoModelForCausalLM.from_config`` gives it (llama4's Llama4ForCausalLM)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = config.get("architectures")
    names = []
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        names.append(architectures[0])
    fallback = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config["model_type"])
    names.append(fallback)
    text_class = (getattr(built_config, "sub_configs", None) or {}).get("text_config")
    for name in names:
        cls = getattr(transformers, name, None) if name else None
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            continue
        if isinstance(built_config, cls.config_class):
            return cls, built_config
        if text_class is not None and cls.config_class is text_class:
            return cls, built_config.get_text_config()
    raise UsageError(
        f"config.json: transformers {transformers.__version__} has no causal-LM class for "
        f"model_type {config['model_type']!r}"
        + (f" and no class {names[0]!r}" if len(names) > 1 else "")
        + "; name the model class in architectures"
    )


def _written_config(built_config) -> dict:
    """The fields of the config transformers built that its class declares, as JSON values:
    the class defaults written out, so that another transformers version does not fall
    back to its own; not the generic ones every config carries at their defaults."""
    base_class = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
    generic = base_class().to_dict()
    return {
        k: v
        for k, v in built_config.to_dict().items()
        if not k.startswith("_")
        and k != "transformers_version"
        and not (k in generic and generic[k] == v)
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --- what save_pretrained writes ------------------------------------------------------------


def _saved(model, major: int) -> tuple[dict, dict]:
    """name -> (tensor, its source names in the state dict, whether it *is* that tensor),
    in save_pretrained's names; and each state-dict name's (tensor, fan axes)."""
    state = model.state_dict()
    for key in model._keys_to_ignore_on_save or ():
        state.pop(key, None)
    modules = dict(model.named_modules())
    owners = {}
    for name, tensor in state.items():
        owner = modules.get(name.rpartition(".")[0])
        if type(owner).__name__ == "Conv1D" and name.endswith(".weight"):
            fans = CONV1D
        else:
            fans = TORCH_CONV if tensor.dim() > 2 else TORCH_LINEAR
        owners[name] = (tensor, fans)
    if major >= 5:
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict

        state = remove_tied_weights_from_state_dict(state, model)
        origin = {id(t): (t, frozenset([n])) for n, t in state.items()}
        with _Provenance(origin):
            written = revert_weight_conversion(model, dict(state))
    else:
        state = _untie_4x(state, model)
        written = model._fix_state_dict_keys_on_save(state)
        origin = {id(t): (t, frozenset([n])) for n, t in state.items()}
    by_id = {id(t): n for n, t in state.items()}
    saved = {}
    for name, tensor in written.items():
        if id(tensor) in by_id:
            saved[name] = (tensor, [by_id[id(tensor)]], True)
            continue
        known = origin.get(id(tensor))
        if known is None:
            saved[name] = (tensor, [], False)
        else:
            saved[name] = (tensor, sorted(known[1]), False)
    return saved, owners


def _untie_4x(state: dict, model) -> dict:
    """transformers 4.x save_pretrained's removal of tied duplicates (inline there): of the
    names sharing a storage, those its ``_tied_weights_keys`` match go, the last one stays."""
    import re

    from transformers.modeling_utils import _get_tied_weight_keys

    groups: dict[int, list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault(_storage(tensor), []).append(name)
    patterns = _get_tied_weight_keys(model)
    state = dict(state)
    for names in groups.values():
        if len(names) < 2:
            continue
        found = 0
        for name in sorted(names):
            if any(re.search(p, name) for p in patterns):
                found += 1
                if found < len(names):
                    del state[name]
        left = [n for n in names if n in state]
        if len(left) > 1:
            raise UsageError(
                f"transformers {transformers.__version__}: {', '.join(left)} share one tensor "
                "that the model does not declare tied; save_pretrained refuses such a model"
            )
    return state


class _Provenance(TorchFunctionMode):
    """Follows which state-dict tensors each result of the weight conversion came from."""

    def __init__(self, origin: dict):
        super().__init__()
        self.origin = origin  # id(tensor) -> (tensor, source names); the tensor kept alive

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        sources = frozenset().union(
            *(self.origin[id(t)][1] for t in _tensors((args, kwargs)) if id(t) in self.origin)
        )
        if sources:
            for t in _tensors(result):
                self.origin.setdefault(id(t), (t, sources))
        return result


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


# --- recording the init ------------------------------------------------------------------


def _is_meta(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_meta


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


class _Recorder(TorchFunctionMode):
    """Records every write to a tensor's storage, in order. A write to a meta tensor is not
    performed (it has no values); one to a real tensor (made on the CPU by a constructor
    that ignores the device, or a CPU buffer) is recorded and performed."""

    def __init__(self):
        super().__init__()
        self.writes: dict[int, list[Write]] = {}
        self.alive: list = []  # every recorded storage, so that its id is never reused
        self.label = ""  # the torch.nn.init composite being run (xavier_uniform_, ...)
        self.paused = False  # a real tensor's init being performed, already recorded

    # what the model code calls

    def write(self, tensor: Any, effect: dict | str, call: str) -> None:
        if not isinstance(tensor, torch.Tensor) or self.paused:
            return
        if self.label:
            call = f"{self.label}: {call}"
            if isinstance(effect, str):
                effect = f"{self.label}: {effect}"
        key = _storage(tensor)
        if key not in self.writes:
            self.writes[key] = []
            self.alive.append(tensor.untyped_storage())
        self.writes[key].append(
            Write(
                tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), effect, call
            )
        )

    @contextmanager
    def labelled(self, label: str) -> Iterator[None]:
        before, self.label = self.label, label
        try:
            yield
        finally:
            self.label = before

    @contextmanager
    def pause(self) -> Iterator[None]:
        before, self.paused = self.paused, True
        try:
            yield
        finally:
            self.paused = before

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        # A torch.nn.init function hands itself over as (tensor=..., ...), under whatever
        # name it has now (torch's, transformers', a wrapper here): known by its name.
        init_function = _DISPATCHED.get(getattr(func, "__name__", ""))
        tensor = kwargs.get("tensor")
        if init_function is not None and not args and isinstance(tensor, torch.Tensor):
            with self.labelled(""):  # the call speaks for itself
                init_function(self, **kwargs)
            return tensor if tensor.is_meta else self._perform(func, args, kwargs)
        target = args[0] if args else None
        if isinstance(target, torch.Tensor):
            method = _METHODS.get(func)
            name = getattr(func, "__name__", "")
            if method is not None:
                written = method(self, args, kwargs)
                if written is not None:
                    self.write(target, *written)
                return target if target.is_meta else self._perform(func, args, kwargs)
            if _writes_in_place(name):
                call = _call(name, args[1:], kwargs)
                if name in _MAPS and len(args) == 1 and not kwargs:
                    self.write(target, Map(_MAPS[name], call), call)
                else:
                    self.write(target, f"{call} in place", name)
                return target if target.is_meta else self._perform(func, args, kwargs)
        out = kwargs.get("out")
        if isinstance(out, torch.Tensor):
            self.write(out, f"{_call(_name(func), args, kwargs)} writes it", _name(func))
        if _is_meta(target) and _reads_values(func, args, kwargs):
            # A constructor reading a value back (4.x apertus: float(beta.cpu().item())):
            # a meta tensor known to hold one number is given that number.
            held = _held(self, target)
            if held is not None:
                return func(held, *args[1:], **kwargs)
        result = func(*args, **kwargs)
        self._created(func, args, kwargs, result)
        return result

    def _perform(self, func, args, kwargs):
        with self.pause():
            return func(*args, **kwargs)

    def _created(self, func, args, kwargs, result) -> None:
        """A new meta storage: what it holds when made (torch.zeros: zeros, torch.empty:
        nothing yet, a clone: what its source held, a small computation on constants: its
        value)."""
        for tensor in _tensors(result):
            if not tensor.is_meta or _storage(tensor) in self.writes:
                continue
            effect = _creation(self, func, args, kwargs, tensor)
            self.write(tensor, effect, _call(_name(func), args, kwargs))

    # what a tensor holds now, read from its writes

    def holds(self, tensor: torch.Tensor) -> tuple[Any, set[int]]:
        """What ``tensor`` holds, as its writes left it: (effect, zero rows)."""
        writes = self.writes.get(_storage(tensor), [])
        return fold(writes, tensor.storage_offset(), tuple(tensor.shape), tensor.is_contiguous())

    def state(self, tensor: torch.Tensor) -> tuple[dict | None, str | None]:
        """(entry with zero_rows, None) or (None, problem) for ``tensor`` as written; a
        real tensor nothing wrote to is read."""
        entry, problem = finish(*self.holds(tensor))
        if problem is NOTHING and not tensor.is_meta:
            values = _constant_of(tensor)
            if values is not None:
                return values, None
            return None, COMPUTED
        return entry, problem


def _combine(name, sources, same, recorder: _Recorder, owners) -> tuple[dict | None, str | None]:
    """The entry of a saved tensor from those of the state-dict tensors it was made of."""
    if not sources:
        return None, "transformers' weight conversion made it from nothing weightgen can follow"
    states = [recorder.state(owners[s][0]) for s in sources]
    for source, (_, problem) in zip(sources, states):
        if problem is not None:
            return None, problem if same else f"{problem} (in {source})"
    if same:
        return states[0][0], None
    entries = [e for e, _ in states]
    if any("zero_rows" in e for e in entries):
        return None, f"zero rows in {', '.join(sources)} do not follow the weight conversion"
    if any(e != entries[0] for e in entries):
        return None, f"made of {', '.join(sources)}, which are initialised differently"
    return dict(entries[0]), None


def _call(name: str, args: tuple | list, kwargs: dict) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"<tensor {list(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _name(func) -> str:
    return getattr(func, "__name__", None) or repr(func)


# Tensor methods that write values: (recorder, args, kwargs) -> (effect, call).
def _m_normal(rec, args, kwargs):
    mean = args[1] if len(args) > 1 else kwargs.get("mean", 0.0)
    std = args[2] if len(args) > 2 else kwargs.get("std", 1.0)
    return normal(mean, std), f"normal_(mean={mean}, std={std})"


def _m_uniform(rec, args, kwargs):
    a = args[1] if len(args) > 1 else kwargs.get("from", 0.0)
    b = args[2] if len(args) > 2 else kwargs.get("to", 1.0)
    return uniform(a, b, tuple(args[0].shape)), f"uniform_({a}, {b})"


def _m_zero(rec, args, kwargs):
    return dict(ZEROS), "zero_()"


def _m_fill(rec, args, kwargs):
    value = args[1] if len(args) > 1 else kwargs.get("value")
    return constant(value), f"fill_({_short(value)})"


def _m_copy(rec, args, kwargs):
    source = args[1] if len(args) > 1 else kwargs.get("src")
    return _copied(rec, source), f"copy_({_short(source)})"


def _m_setitem(rec, args, kwargs):
    tensor, index, value = args[0], args[1], args[2]
    view = tensor[index]
    effect = constant(value) if not isinstance(value, torch.Tensor) else _copied(rec, value)
    call = f"__setitem__({_short(index)}, {_short(value)})"
    if isinstance(view, torch.Tensor) and view.is_meta and _storage(view) == _storage(tensor):
        rec.write(view, effect, call)
    else:
        rec.write(tensor, f"{call} (an indexed write)", call)
    return None


def _copied(rec: _Recorder, source: Any) -> dict | str:
    """What a copy of ``source`` holds: what the source was written with, or a constant
    read from its values (a real tensor), else a problem."""
    if not isinstance(source, torch.Tensor):
        return constant(source)
    entry, problem = rec.state(source)
    if problem is None:
        return entry if "zero_rows" not in entry else "copy_ of a tensor with zero rows"
    if problem in (EMPTY, NOTHING):
        return "copy_ of a tensor nothing initialised"
    if problem == COMPUTED:
        return "copy_ of values the model computed"
    return f"copy_ of {problem if len(problem) <= 80 else problem[:77] + '...'}"


_READS = {"item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"}


def _reads_values(func, args, kwargs) -> bool:
    name = _name(func)
    if name in _READS:
        return True
    targets = [*args[1:], kwargs.get("device")]
    return name == "to" and any(str(t) == "cpu" for t in targets if t is not None)


def _held(rec: _Recorder, tensor: torch.Tensor) -> torch.Tensor | None:
    """The values of a meta tensor known to hold one number, on the CPU; else None."""
    entry, problem = rec.state(tensor)
    if problem is not None or entry["init"] not in ("zeros", "ones", "constant"):
        return None
    if "zero_rows" in entry or tensor.numel() > MAX_VALUES:
        return None
    value = {"zeros": 0.0, "ones": 1.0}.get(entry["init"], entry.get("value"))
    return torch.full(tensor.shape, value, dtype=tensor.dtype, device="cpu")


def _constant_of(tensor: torch.Tensor) -> dict | None:
    """The entry of a real tensor whose values are all one number."""
    flat = tensor.detach().flatten()
    if flat.numel() and bool((flat == flat[0]).all()):
        entry = constant(flat[0].item())
        return entry if isinstance(entry, dict) else None
    return None


_METHOD_HANDLERS: dict[str, Callable] = {
    "normal_": _m_normal,
    "uniform_": _m_uniform,
    "zero_": _m_zero,
    "fill_": _m_fill,
    "copy_": _m_copy,
}
_METHODS: dict = {getattr(torch.Tensor, n): h for n, h in _METHOD_HANDLERS.items()}
_METHODS[torch.Tensor.__setitem__] = _m_setitem  # records through the view it writes


# In-place methods that change a tensor's metadata or flags, not its values.
_METADATA = {
    "requires_grad_",
    "share_memory_",
    "retain_grad",
    "detach_",
    "resize_",
    "resize_as_",
    "unsqueeze_",
    "squeeze_",
    "t_",
    "transpose_",
    "swapdims_",
    "swapaxes_",
    "as_strided_",
    "set_",
    "rename_",
    "refine_names_",
    "record_stream",
}


# Elementwise maps a spec transform expresses, in place and as functions.
_MAPS = {"log_": "log", "log": "log"}


def _writes_in_place(name: str) -> bool:
    if name.startswith("__i") and name.endswith("__"):
        return True  # x += y
    return name.endswith("_") and not name.startswith("_") and name not in _METADATA


def _creation(rec: _Recorder, func, args, kwargs, result: torch.Tensor) -> dict | str:
    name = _name(func)
    factory = _FACTORIES.get(name)
    if factory is not None:
        return factory(rec, name, args, kwargs)
    if name in _MAPS and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
        source = args[0]  # torch.log(A): a new tensor, the map of what A holds
        if source.shape == result.shape and source.is_contiguous():
            effect = mapped(*rec.holds(source), Map(_MAPS[name], _call(name, args, kwargs)))
            if isinstance(effect, dict):
                return effect
    value = _evaluated(rec, func, args, kwargs, result)
    return value if value is not None else _call(name, args, kwargs)


# Functions whose values are draws: never evaluated (one draw of one value is no constant).
_RANDOM = {"rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson"}


def _evaluated(rec: _Recorder, func, args, kwargs, result: torch.Tensor) -> dict | None:
    """A small computation on constants (``torch.ones(8) * -10``, ``torch.log(torch.tensor(
    0.5))``), run again on the CPU with the constants' values: its entry when its result is
    one number, else None."""
    if _name(func) in _RANDOM or result.numel() > MAX_VALUES:
        return None
    values = {}
    for tensor in _tensors((args, kwargs)):
        if tensor.numel() > MAX_VALUES:
            return None
        if tensor.is_meta:
            held = _held(rec, tensor)
            if held is None:
                return None
            values[id(tensor)] = held
    args, kwargs = _replaced((args, kwargs), values)
    if "device" in kwargs:
        kwargs["device"] = "cpu"
    try:
        with torch.device("cpu"):
            out = func(*args, **kwargs)
    except Exception:
        return None
    if not isinstance(out, torch.Tensor) or out.shape != result.shape:
        return None
    return _constant_of(out)


def _replaced(value: Any, tensors: dict) -> Any:
    if isinstance(value, torch.Tensor):
        return tensors.get(id(value), value)
    if isinstance(value, (list, tuple)):
        return type(value)(_replaced(v, tensors) for v in value)
    if isinstance(value, dict):
        return {k: _replaced(v, tensors) for k, v in value.items()}
    return value


def _fill_value(index: int):
    def read(rec, name, args, kwargs):
        value = args[index] if len(args) > index else kwargs.get("fill_value")
        return constant(value)

    return read


def _normal_factory(rec, name, args, kwargs):
    """torch.normal(mean, std, size=...) with numbers: a normal draw."""
    mean = args[0] if args else kwargs.get("mean")
    std = args[1] if len(args) > 1 else kwargs.get("std", 1.0)
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
        return normal(mean, std)
    return _call(name, args, kwargs)


def _literal(rec, name, args, kwargs):
    """torch.tensor(data) and the like: the data's entry when it is one number."""
    data = args[1 if name == "new_tensor" else 0] if args else kwargs.get("data")
    if isinstance(data, torch.Tensor):
        return _copied(rec, data)
    try:
        values = torch.tensor(data, dtype=torch.float64, device="cpu")
    except Exception:
        return f"{name}({_short(data)})"
    if values.numel() > MAX_VALUES:
        return f"{name}({_short(data)})"
    return _constant_of(values) or f"{name}({_short(data)})"


def _same_as_source(rec, name, args, kwargs):
    source = args[0] if args else None
    if isinstance(source, torch.Tensor):
        return _copied(rec, source)
    return f"{name}(...)"


def _padded(rec, name, args, kwargs):
    """torch.nn.functional.pad: transformers 5's tie_weights pads an output bias to the
    vocabulary (by nothing, or with the value it already holds)."""
    source = args[0] if args else kwargs.get("input")
    pads = args[1] if len(args) > 1 else kwargs.get("pad", ())
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value")
    copied = _copied(rec, source) if isinstance(source, torch.Tensor) else None
    if isinstance(copied, dict) and (
        not any(pads) or (mode == "constant" and copied == constant(value or 0.0))
    ):
        return copied
    return _call(name, args, kwargs)


_FACTORIES: dict[str, Callable] = {
    "pad": _padded,
    **dict.fromkeys(("zeros", "zeros_like", "new_zeros"), lambda *_: dict(ZEROS)),
    **dict.fromkeys(("ones", "ones_like", "new_ones"), lambda *_: dict(ONES)),
    "full": _fill_value(1),
    "full_like": _fill_value(1),
    "new_full": _fill_value(2),
    **dict.fromkeys(
        ("empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"),
        lambda *_: EMPTY,
    ),
    **dict.fromkeys(("randn", "randn_like"), lambda *_: normal(0.0, 1.0)),
    "normal": _normal_factory,
    **dict.fromkeys(("rand", "rand_like"), lambda *_: uniform(0.0, 1.0)),
    **dict.fromkeys(("tensor", "as_tensor", "new_tensor"), _literal),
    **dict.fromkeys(
        ("clone", "contiguous", "to", "type", "float", "double", "half", "bfloat16"),
        _same_as_source,
    ),
}


# --- the torch.nn.init functions ----------------------------------------------------------


def _p_normal(rec, tensor, mean=0.0, std=1.0, generator=None):
    rec.write(tensor, normal(mean, std), f"normal_(mean={mean}, std={std})")
    return tensor


def _p_uniform(rec, tensor, a=0.0, b=1.0, generator=None):
    rec.write(tensor, uniform(a, b, tuple(tensor.shape)), f"uniform_(a={a}, b={b})")
    return tensor


def _p_trunc_normal(rec, tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    call = f"trunc_normal_(mean={mean}, std={std}, a={a}, b={b})"
    rec.write(tensor, trunc_normal(mean, std, a, b), call)
    return tensor


def _p_constant(rec, tensor, val):
    rec.write(tensor, constant(val), f"constant_({_short(val)})")
    return tensor


def _p_ones(rec, tensor):
    rec.write(tensor, dict(ONES), "ones_()")
    return tensor


def _p_zeros(rec, tensor):
    rec.write(tensor, dict(ZEROS), "zeros_()")
    return tensor


def _p_orthogonal(rec, tensor, gain=1.0, generator=None):
    rec.write(tensor, orthogonal(gain, tensor.dim()), f"orthogonal_(gain={_short(gain)})")
    return tensor


PRIMITIVES: dict[str, Callable] = {
    "normal_": _p_normal,
    "uniform_": _p_uniform,
    "trunc_normal_": _p_trunc_normal,
    "constant_": _p_constant,
    "ones_": _p_ones,
    "zeros_": _p_zeros,
    "orthogonal_": _p_orthogonal,
}
# Composites run as torch wrote them, their writes recorded under their name (xavier_normal_
# is a normal_ with its std from the fans; xavier_uniform_ a uniform_(-b, b)); those that do
# nothing on the meta device (sparse_, dirac_) stay what they are called.
COMPOSITES = (
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "sparse_",
    "eye_",
    "dirac_",
)
_ORIGINALS = {n: getattr(torch.nn.init, n) for n in (*PRIMITIVES, *COMPOSITES)}


def _kaiming_uniform(rec, tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """torch's bound gain sqrt(3 / fan) is JAX's uniform variance scaling with scale gain²
    (torch's own default for nn.Linear and nn.ConvNd weights: a = sqrt(5), scale 1/3)."""
    call = f"kaiming_uniform_(a={_short(a)}, mode={mode!r}, nonlinearity={nonlinearity!r})"
    if tensor.dim() < 2 or mode not in ("fan_in", "fan_out"):
        effect: dict | str = f"{call} on a {tensor.dim()}-D tensor (torch needs 2 dimensions)"
    elif tensor.numel() == 0:
        effect = dict(ZEROS)  # torch leaves a tensor with no elements as it is
    else:
        try:
            gain = torch.nn.init.calculate_gain(nonlinearity, a)
        except ValueError as exc:
            effect = f"{call} ({exc})"
        else:
            effect = variance_scaling(gain * gain, mode)
    rec.write(tensor, effect, call)
    return tensor


# The torch.nn.init functions that hand themselves to a TorchFunctionMode (tensor=...):
# seen by the recorder as one call, their inner writes unseen.
_DISPATCHED = {n: PRIMITIVES[n] for n in ("normal_", "uniform_", "constant_")}
_DISPATCHED["kaiming_uniform_"] = _kaiming_uniform
# Where torch's modules took the functions by name (as transformers' own list has it).
_TORCH_MODULES = (
    "torch.nn.init",
    "torch.nn.modules.activation",
    "torch.nn.modules.transformer",
    "torch.nn.modules.linear",
    "torch.nn.modules.loss",
    "torch.nn.modules.batchnorm",
    "torch.nn.modules.conv",
    "torch.nn.modules.normalization",
    "torch.nn.modules.rnn",
    "torch.nn.modules.sparse",
)


def _bind(name: str, rec: _Recorder) -> Callable:
    """torch.nn.init's ``name``, recorded for a meta tensor and run for a real one."""
    primitive, original = PRIMITIVES[name], _ORIGINALS[name]

    @functools.wraps(original)  # its name: torch hands it over to the recorder by name
    def wrapper(tensor, *args, **kwargs):
        primitive(rec, tensor, *args, **kwargs)
        if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
            with rec.pause():
                original(tensor, *args, **kwargs)
        return tensor

    return wrapper


def _composite(name: str, rec: _Recorder) -> Callable:
    original = _ORIGINALS[name]

    @functools.wraps(original)
    def wrapper(tensor, *args, **kwargs):
        kwargs.pop("generator", None)
        call = _call(name, args, kwargs)
        rec.write(tensor, call, call)
        with rec.labelled(call):
            try:
                original(tensor, *args, **kwargs)
            except Exception as exc:
                rec.write(tensor, f"{call} (it cannot run on the meta device: {exc})", call)
        return tensor

    return wrapper


@contextmanager
def _init_functions(rec: _Recorder) -> Iterator[None]:
    """The torch.nn.init functions replaced by recording ones wherever models reach them."""
    import sys

    wrappers = {n: _bind(n, rec) for n in PRIMITIVES}
    wrappers.update({n: _composite(n, rec) for n in COMPOSITES})
    with ExitStack() as stack:
        for module_name in _TORCH_MODULES:
            module = sys.modules.get(module_name)
            for name, wrapper in wrappers.items():
                if module is not None and hasattr(module, name):
                    stack.enter_context(_swapped(module, name, wrapper))
        try:  # transformers 5: its init.normal_ & co. call the torch functions kept here
            from transformers.initialization import TORCH_INIT_FUNCTIONS
        except ImportError:
            TORCH_INIT_FUNCTIONS = None
        if TORCH_INIT_FUNCTIONS is not None:
            saved = dict(TORCH_INIT_FUNCTIONS)
            TORCH_INIT_FUNCTIONS.update({n: w for n, w in wrappers.items() if n in saved})
            stack.callback(TORCH_INIT_FUNCTIONS.update, saved)
        yield


@contextmanager
def _swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers' and Python's warnings off while a model is built (the CLI's stderr is
    one line per error)."""
    import warnings

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(before)


@contextmanager
def _untied() -> Iterator[None]:
    """Build without tying (transformers 5 ties in post_init, before any init off the meta
    device would run): the tied modules are initialised apart, then tied, as there."""
    with _swapped(transformers.PreTrainedModel, "tie_weights", lambda self, *a, **k: None):
        yield
