"""Who may import whom (docs/architecture.md): a stage never imports another stage, the core never
imports a stage, and no module imports a private name (or a private module) of another package or
module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_aet"

#: The stages: each imports the core building blocks, never another stage.
STAGES = ("preprocess", "align", "reconstruct", "trace", "classify", "refine", "edit", "review", "analysis")

#: The core: data, geometry and the building blocks the stages share.
CORE = ("model", "geometry", "elements", "progress", "threads", "io", "simulate", "projections", "background",
        "backprojection", "frames", "sampling", "class_profiles", "atom_labels", "undo")


def modules(top):
    """(dotted name, path) of the module or every module of the package ``top``."""
    path = PACKAGE / top
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    for file in files:
        parts = file.relative_to(PACKAGE).with_suffix("").parts
        yield ".".join(("napari_aet", *(parts[:-1] if parts[-1] == "__init__" else parts))), file


def imports(name, path):
    """(imported module, imported names) of every import statement in the module, lazy ones
    included, relative imports resolved to absolute dotted names."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = tuple(alias.name for alias in node.names)
            if node.module is None:  # from . import x: x is a module of the package
                for alias in names:
                    yield f"{target}.{alias}", ()
            else:
                yield target, names


def stage_of(module):
    """The stage a dotted module name belongs to, or None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "napari_aet" and parts[1] in STAGES else None


def private_parts(importer, module, names):
    """The private names of ``module`` (or private modules on its path) that ``importer`` may not
    import: a leading underscore is private to its module, and a private module to its package."""
    parts = module.split(".")
    found = [name for name in names if name.startswith("_") and module != importer]
    for depth, part in enumerate(parts):
        owner = ".".join(parts[:depth])  # the package that owns the private module
        if part.startswith("_") and not part.startswith("__") and importer != owner \
                and not importer.startswith(owner + "."):
            found.append(".".join(parts[:depth + 1]))
    return found


ALL_MODULES = [m for top in [p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()]
               if not top.startswith("__") for m in modules(top)]


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(stage):
    offences = [f"{name} imports {module}" for name, path in modules(stage) for module, _ in imports(name, path)
                if stage_of(module) not in (None, stage)]
    assert not offences, "stages import other stages (move the shared part into a core module, or the " \
                         "orchestration into workflow.py): " + "; ".join(offences)


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_no_stage(core):
    offences = [f"{name} imports {module}" for name, path in modules(core) for module, _ in imports(name, path)
                if stage_of(module) is not None]
    assert not offences, "core modules import stages: " + "; ".join(offences)


def test_no_private_name_is_imported_across_modules():
    offences = [f"{name} imports {', '.join(found)} from {module}" for name, path in ALL_MODULES
                for module, names in imports(name, path)
                if module.startswith("napari_aet") and (found := private_parts(name, module, names))]
    assert not offences, "private names used across modules (make them public and documented): " + \
                         "; ".join(offences)


def test_the_checks_see_the_imports():
    """The parser finds the imports the checks judge (a check that sees nothing cannot fail)."""
    found = dict(((module, names) for module, names in imports(*next(modules("trace")))))
    assert "napari_aet.model" in found and "Reconstruction" in found["napari_aet.model"]
    assert stage_of("napari_aet.reconstruct.wbp") == "reconstruct" and stage_of("napari_aet.geometry") is None
    assert private_parts("napari_aet.edit", "napari_aet.trace", ("fit_peaks", "_fit_peaks")) == ["_fit_peaks"]
    assert private_parts("napari_aet.analysis.x", "napari_aet.reconstruct._common", ("a",)) == \
        ["napari_aet.reconstruct._common"]
    for inside in ("napari_aet.reconstruct", "napari_aet.reconstruct.wbp"):  # its own package may
        assert private_parts(inside, "napari_aet.reconstruct._common", ("a",)) == []
