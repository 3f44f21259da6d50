"""The status bar's key hints while the atom editor's keys are bound.

napari writes a layer's mode keys into ``layer.help`` ("use <2> for add points"), which the
status bar shows. Where the editor binds the same key (2 labels an atom Pt), that hint lies:
:class:`KeyHelp` rewrites the help of the layers the editor's keys are bound on — its own keys
first, napari's hints for the keys it leaves alone after — and restores napari's text when the
keys are unbound.
"""

from __future__ import annotations


def help_with_keys(napari_help: str, keys: dict[str, str]) -> str:
    """``keys`` (key as shown -> what it does) before the clauses of ``napari_help``
    ("use <K> for …", comma-separated) whose key ``keys`` does not take (letters in any case)."""
    taken = {key.lower() for key in keys}
    kept = [clause for clause in napari_help.split(", ")
            if clause and not any(clause.lower().startswith(f"use <{key}>") for key in taken)]
    ours = ", ".join(f"<{key}> {what}" for key, what in keys.items())
    return f"editor: {ours}" + (f"; {', '.join(kept)}" if kept else "")


class KeyHelp:
    """Keeps the help of some layers rewritten by :func:`help_with_keys` until :meth:`clear`."""

    def __init__(self, viewer):
        self.viewer = viewer
        self._layers = []  # [layer, napari's own help, the help written]
        self._keys = {}

    def show(self, layers, keys: dict[str, str]):
        """Rewrite the help of ``layers`` (and again whenever napari sets it) for ``keys``."""
        self.clear()
        self._keys = keys
        for layer in layers:
            entry = [layer, layer.help, ""]
            self._layers.append(entry)
            layer.events.help.connect(self._on_help)
            self._write(entry)

    def clear(self):
        """Give every layer napari's own help back and stop rewriting it."""
        layers, self._layers = self._layers, []
        for layer, napari_help, _ in layers:
            layer.events.help.disconnect(self._on_help)
            layer.help = napari_help
            if self.viewer.layers.selection.active is layer:
                self.viewer.help = napari_help

    def _write(self, entry):
        layer = entry[0]
        entry[2] = help_with_keys(entry[1], self._keys)
        layer.help = entry[2]
        if self.viewer.layers.selection.active is layer:  # the status bar reads it on the next mouse move
            self.viewer.help = layer.help

    def _on_help(self, event):
        for entry in self._layers:
            if entry[0] is event.source and event.source.help != entry[2]:  # napari's new text, not ours
                entry[1] = event.source.help
                self._write(entry)
