"""Settings for the whole test session."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def autosave_folder(tmp_path_factory):
    """Studies never saved autosave into a temporary folder, never into the user's data directory."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("autosave")
        patch.setenv("NAPARI_AET_AUTOSAVE_DIR", str(folder))
        yield folder
