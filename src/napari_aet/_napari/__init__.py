"""Everything that imports napari or Qt, or only serves napari: the dock widgets (one per step,
and the AET workbench), ``layers`` (how the core types appear as napari layers), ``hooks``
(readers and writers), ``study_layers`` (batch studies in napari) and ``sample_data``.
The core — every module outside this package — never imports it (see docs/gui.md)."""


def screenshot(viewer, path=None, *, size=None):
    """The canvas as an RGBA array ``(height, width, 4)``, also saved to ``path`` if given.

    Works for a viewer made with ``show=False`` too: its window is shown first, because the
    canvas of a never-shown window renders black (measured under Xvfb with napari 0.9.2).
    """
    viewer.window.show()
    return viewer.screenshot(path=None if path is None else str(path), size=size, canvas_only=True,
                             flash=False)
