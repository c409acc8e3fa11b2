"""napari-softseg: the napari plugin. Thin views over the ``softseg`` engine.

Importing this package must stay cheap (no torch, no Qt): napari imports it to read the manifest.
"""

from softseg import __version__

__all__ = ["__version__"]
