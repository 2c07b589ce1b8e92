"""The built-in model families: one module each, declaring ``FAMILY`` (see ..family).

Every module in this package is found and registered by ``weightgen.hf``: adding a family
is adding a module here.
"""
