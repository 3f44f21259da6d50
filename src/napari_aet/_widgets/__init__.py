"""napari dock widgets: one thin widget per stage over the Qt-free core (see docs/gui.md)."""


def screenshot(viewer, path=None, *, size=None):
    """The canvas as an RGBA array ``(height, width, 4)``, also saved to ``path`` if given.

    Works for a viewer made with ``show=False`` too: its window is shown first, because the
    canvas of a never-shown window renders black (measured under Xvfb with napari 0.9.2).
    """
    viewer.window.show()
    return viewer.screenshot(path=None if path is None else str(path), size=size, canvas_only=True,
                             flash=False)
