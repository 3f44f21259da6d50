"""napari dock widgets: one thin widget per stage over the Qt-free core (see docs/gui.md)."""
