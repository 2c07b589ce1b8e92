"""The real loader of quantized folders: transformers 5.x (with accelerate) in a process of
its own, run by test_quant.py: ``python quant_client.py JOBS.json`` prints one JSON report.

Each job ``{"folder": DIR, "out": FILE}`` loads DIR with from_pretrained on CPU in float32
(transformers dequantizes FP8 blocks, MXFP4 experts and compressed-tensors weights, FP8,
int4 and NVFP4 alike, there; in float32 the products are exact, so they can be compared bit
for bit with weightgen's own dequantization; compressed-tensors multiplies in the scale's
dtype) and saves every loaded tensor, as named in the model, to the safetensors FILE; the
report gives the loading info (missing, unexpected, mismatched keys) and whether a forward
pass is finite.
"""

from __future__ import annotations

import json
import sys
import warnings

import torch
import transformers
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()


def load(job: dict) -> dict:
    folder = job["folder"]
    with open(f"{folder}/config.json") as f:
        config = json.load(f)
    options = {}
    method = config.get("quantization_config", {}).get("quant_method")
    if method == "mxfp4":
        options["quantization_config"] = transformers.Mxfp4Config(dequantize=True)
    elif method == "compressed-tensors":  # needs the compressed-tensors package
        options["quantization_config"] = transformers.CompressedTensorsConfig(dequantize=True)
    model_class = getattr(transformers, config["architectures"][0])
    model, info = model_class.from_pretrained(
        folder, output_loading_info=True, dtype=torch.float32, **options
    )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, job["out"])
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    return {
        "info": {k: sorted(map(str, v)) for k, v in info.items()},
        "finite": bool(torch.isfinite(logits).all()),
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    print(json.dumps([load(job) for job in jobs]))
