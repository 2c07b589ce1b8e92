"""weightgen: weight files from jax.nn.initializers, byte-identical to JAX, streamed.

The public API (importing it does not import JAX; generating does)::

    import weightgen
    weightgen.generate("he-normal", (3, 3, 64, 128), "k.safetensors")
    tensors = weightgen.load("k.safetensors")
    weightgen.write_model("config.json", "llama/")  # a Hugging Face model folder
"""

from .api import (
    WriteResult,
    generate,
    load,
    model_spec,
    run_spec,
    verify,
    write,
    write_model,
    write_parsed,
)
from .coordination import Cluster
from .errors import (
    FileFormatError,
    GenerationError,
    HashMismatchError,
    InsufficientSpaceError,
    OutputExistsError,
    UsageError,
    WeightgenError,
)
from .plan import Plan, TensorSpec, make_tensor
from .stats import inspect_file
from .version import __version__

__all__ = [
    "Cluster",
    "FileFormatError",
    "GenerationError",
    "HashMismatchError",
    "InsufficientSpaceError",
    "OutputExistsError",
    "Plan",
    "TensorSpec",
    "UsageError",
    "WeightgenError",
    "WriteResult",
    "__version__",
    "generate",
    "inspect_file",
    "load",
    "make_tensor",
    "model_spec",
    "run_spec",
    "verify",
    "write",
    "write_model",
    "write_parsed",
]
