"""mriad: unsupervised anomaly detection in brain MRI with patched diffusion models."""

__version__ = "0.1.0"
