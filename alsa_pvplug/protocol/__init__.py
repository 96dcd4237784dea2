"""Protocol layer.

Rule: modules here are pure.  They never perform I/O, never read a clock,
never import cffi or the compiled module.  Inputs in, outputs out;
``tests/unit/test_layering.py`` checks the imports.
"""
