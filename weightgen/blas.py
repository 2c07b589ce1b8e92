"""Which BLAS computes JAX's QR on this host: the one thing besides JAX that a QR-based
tensor's bytes (``orthogonal``, ``delta-orthogonal``) depend on.

On CPU, jaxlib takes its LAPACK kernels from ``scipy.linalg.cython_lapack``
(``GetLapackKernelsFromScipy`` in ``jaxlib/cpu/_lapack.so``), so QR runs in the BLAS scipy
links: OpenBLAS in scipy's wheels, which picks its kernels per CPU at load time, or per
``OPENBLAS_CORETYPE``. Kernels sum in different orders, so a 32x32 QR differs in float32
between ``Haswell`` and ``SkylakeX`` kernels (the elementwise initializers never touch BLAS).

The one door to threadpoolctl's view of the loaded libraries (checked with threadpoolctl
3.8.0): everything else asks ``info()``.
"""

from __future__ import annotations

import functools
import os

CORETYPE_VARIABLE = "OPENBLAS_CORETYPE"

# OpenBLAS's x86-64 core names that any AVX2 host can run, oldest first: what a replay may try
# in order to reproduce bytes recorded by a host whose kernel was not recorded (format 1).
PORTABLE_X86_CORES = ("Prescott", "Core2", "Nehalem", "Sandybridge", "Haswell", "Zen")


@functools.cache
def info() -> dict[str, str]:
    """``{"library", "version", "kernel", "config"}`` of the BLAS behind JAX's CPU QR, as
    OpenBLAS reports itself (``kernel`` is its core name, ``config`` its build string);
    ``{"library": "unknown"}`` where it cannot be told. Loads scipy's LAPACK (~0.1 s), as
    JAX's first QR on CPU would."""
    try:
        import scipy
        import scipy.linalg.cython_lapack  # loads the BLAS JAX's QR uses
        import threadpoolctl
    except ImportError:
        return {"library": "unknown"}
    controllers = [
        c for c in threadpoolctl.ThreadpoolController().lib_controllers if c.user_api == "blas"
    ]
    # numpy's wheel loads a BLAS of its own (numpy.libs/); scipy's wheel, the one JAX uses,
    # sits in scipy.libs/. Elsewhere (conda, distributions) both link the same one.
    scipy_libs = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    ours = [c for c in controllers if os.path.dirname(c.filepath) == scipy_libs]
    chosen = (ours or controllers or [None])[0]
    if chosen is None:
        return {"library": "unknown"}
    found = {
        "library": str(chosen.internal_api),
        "version": str(chosen.version or "?"),
        "kernel": str(getattr(chosen, "architecture", None) or "?"),
    }
    config = _openblas_config(chosen) if chosen.internal_api == "openblas" else None
    if config:
        found["config"] = config
    return found


def _openblas_config(controller) -> str | None:
    """OpenBLAS's own build string (``openblas_get_config``), e.g. 'OpenBLAS 0.3.30
    DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64'."""
    import ctypes

    try:
        function = controller._get_symbol("openblas_get_config")
    except Exception:  # another threadpoolctl: the config is a nicety
        return None
    if function is None:
        return None
    function.restype = ctypes.c_char_p
    value = function()
    return value.decode("utf-8", "replace") if value else None


def describe(record: dict | None) -> str:
    """'OpenBLAS 0.3.30, kernel Haswell' for messages; 'an unrecorded BLAS' for None."""
    if not record or record.get("library", "unknown") == "unknown":
        return "an unrecorded BLAS" if not record else "an unknown BLAS"
    name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(
        record["library"], record["library"]
    )
    return f"{name} {record.get('version', '?')}, kernel {record.get('kernel', '?')}"


def same_kernel(recorded: dict | None, here: dict) -> bool:
    """Whether two records name the same library, version and kernel (QR bytes agree)."""
    if not recorded:
        return False
    keys = ("library", "version", "kernel")
    return all(recorded.get(k) == here.get(k) for k in keys)
