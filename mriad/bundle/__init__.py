"""Model bundles: `mriad bundle export RUN FILE.zip` and `mriad bundle import FILE.zip` (docs/bundles.md)."""

from mriad.bundle.export import export_bundle, import_bundle
from mriad.bundle.format import Bundle, read_bundle

__all__ = ["Bundle", "export_bundle", "import_bundle", "read_bundle"]
