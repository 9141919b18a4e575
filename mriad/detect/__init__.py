"""`mriad detect`: a trained model applied to new scans, results on each scan's own grid."""

from mriad.detect.run import DetectResult, detect

__all__ = ["DetectResult", "detect"]
