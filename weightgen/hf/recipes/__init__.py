"""The built-in init recipes: one module each, declaring ``RECIPE`` (see ..recipe).

Every module in this package is found and registered by ``weightgen.hf``: adding a recipe
is adding a module here.
"""
