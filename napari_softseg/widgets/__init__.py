"""Dock widgets of napari-softseg, one module per widget (imported lazily by napari)."""
