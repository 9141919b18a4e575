"""`mriad reconstruct`: reconstructions and anomaly maps of a split, batched on the device."""

from mriad.reconstruct.run import reconstruct

__all__ = ["reconstruct"]
