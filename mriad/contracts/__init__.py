"""The on-disk contracts between stages, one owning module each.

- :mod:`mriad.contracts.manifest`: the manifest CSV (one row per subject) and split names.
- :mod:`mriad.contracts.data`: reading a split's preprocessed volumes and masks.
- :mod:`mriad.contracts.run_folder`: the run folder (config, checkpoints, maps, evaluation).

Every other module asks these for paths and records instead of spelling them itself.
"""
