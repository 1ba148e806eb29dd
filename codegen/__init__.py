"""brainline's code generator: spec/ -> both packages' provider classes, docs tables and mirrored tests.

Run `python -m codegen` to regenerate, `python -m codegen --check` to list drifted files.
"""
