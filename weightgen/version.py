"""weightgen's version, in a module that imports nothing: read by processes comparing their
setups before a shared run, without importing the package."""

__version__ = "0.2.0"
