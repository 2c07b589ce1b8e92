"""The real client: what transformers (whichever version is importable) makes of weightgen's
model folders and of configs. Run as a separate process by test_hf.py, once per transformers
version: ``python hf_client.py JOBS.json`` prints one JSON report per job, in order.

Jobs:
- ``{"kind": "load", "folder": DIR}``: from_pretrained(output_loading_info=True); the loading
  report, the model's dtype, whether tied weights share storage, one forward pass, and the
  sha256 of every tensor as loaded (in the names save_pretrained writes), so a test sees
  that nothing was re-initialised on load.
- ``{"kind": "names", "config": {...}}``: the tensors save_pretrained would write, as
  {name: [shape, dtype]}, from the model built on the meta device in the config's dtype (no
  memory; modules transformers keeps in float32 stay float32).
- ``{"kind": "init", "config": {...}}``: transformers' own init of a small model: per tensor,
  whether it is all zeros or all ones, its value if constant, its mean and std, and its
  all-zero rows.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings

import torch
import transformers

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()


def model_class(config: dict):
    return getattr(transformers, config["architectures"][0])


def build_config(config: dict):
    fields = {k: v for k, v in config.items() if k != "model_type"}
    return transformers.AutoConfig.for_model(config["model_type"], **fields)


def saved_tensors(model) -> dict:
    """What save_pretrained writes: each parameter once (tied ones under their first name)
    and the persistent buffers (a router's score-correction bias), in the on-disk layout
    (transformers 5 keeps MoE experts fused in memory only)."""
    tensors = dict(model.named_parameters(remove_duplicate=True))
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    state = model.state_dict(keep_vars=True)
    tensors.update({name: t for name, t in state.items() if name not in parameters})
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4
        return tensors
    return revert_weight_conversion(model, tensors)


def load(job: dict) -> dict:
    folder = job["folder"]
    with open(f"{folder}/config.json") as f:
        config = json.load(f)
    model, info = model_class(config).from_pretrained(
        folder, output_loading_info=True, dtype="auto"
    )
    tied = None
    if getattr(model.config, "tie_word_embeddings", False) and model.get_output_embeddings():
        tied = (
            model.get_input_embeddings().weight.data_ptr()
            == model.get_output_embeddings().weight.data_ptr()
        )
    loaded = saved_tensors(model)
    digests = {
        name: hashlib.sha256(
            t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        ).hexdigest()
        for name, t in loaded.items()
    }
    dtypes = {name: str(t.dtype).removeprefix("torch.") for name, t in loaded.items()}
    ids = torch.randint(0, config["vocab_size"], (1, 7))
    with torch.no_grad():
        output = model(ids)
    first = output[0] if isinstance(output, tuple) else next(iter(output.values()))
    return {
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": [str(m) for m in info["mismatched_keys"]],
        "errors": [str(e) for e in info["error_msgs"]],
        "dtype": str(model.dtype).removeprefix("torch."),
        "tied_shared": tied,
        "finite": bool(torch.isfinite(first.float()).all()),
        "digests": digests,
        "dtypes": dtypes,
    }


def on_meta(config: dict):
    """The model on the meta device, in the config's dtype. Names and shapes need no values,
    but transformers 4.x draws every tensor even there (more than a minute for Kimi-K2's
    70,000 tensors): its own switch (modeling_utils.no_init_weights, checked with 4.57.6)
    skips the draws, and the ties that init_weights makes only when it draws are made here.
    5.x skips drawing on the meta device by itself."""
    built = build_config(config)
    dtype = getattr(torch, config.get("dtype") or "float32")
    cls = model_class(config)
    if not transformers.__version__.startswith("4."):
        with torch.device("meta"):
            return cls._from_config(built, dtype=dtype)
    from transformers.modeling_utils import no_init_weights

    with torch.device("meta"), no_init_weights():
        model = cls._from_config(built, dtype=dtype)
    model.tie_weights()
    return model


def names(job: dict) -> dict:
    model = on_meta(job["config"])
    return {
        name: [list(t.shape), str(t.dtype).removeprefix("torch.")]
        for name, t in saved_tensors(model).items()
    }


def init(job: dict) -> dict:
    torch.manual_seed(0)
    model = model_class(job["config"])(build_config(job["config"]))
    report = {}
    for name, tensor in saved_tensors(model).items():
        values = tensor.detach().double()
        rows = []
        if values.ndim == 2:
            rows = torch.nonzero((values == 0).all(dim=1)).flatten().tolist()
        flat = values.flatten()
        constant = bool((flat == flat[0]).all()) if flat.numel() else False
        report[name] = {
            "zeros": bool((values == 0).all()),
            "ones": bool((values == 1).all()),
            "constant": float(flat[0]) if constant and flat.numel() > 1 else None,
            "mean": float(values.mean()) if values.numel() else 0.0,
            "std": float(values.std()) if values.numel() > 1 else 0.0,
            "zero_rows": rows,
        }
    return report


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    handlers = {"load": load, "names": names, "init": init}
    reports = []
    for job in jobs:
        try:
            reports.append({"ok": True, **handlers[job["kind"]](job)})
        except Exception as exc:  # reported, so the test names the job that failed
            reports.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    json.dump({"version": transformers.__version__, "reports": reports}, sys.stdout)


if __name__ == "__main__":
    main()
