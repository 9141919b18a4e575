"""How networks run on the hardware at hand: the inference executor and the memory estimates.

Model maths lives in :mod:`mriad.models`; this package decides batching, padding, precision, memory
layout, compilation and whether a configuration fits in memory at all.
"""
