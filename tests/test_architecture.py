"""zsdet's packages import only downward (docs/architecture.md): every import of every module under
``zsdet/``, at module level or inside a function, relative or absolute, names its own package or a
package of a lower layer."""
import ast
from pathlib import Path
from typing import List

PACKAGE = Path(__file__).resolve().parents[1] / "zsdet"
# bottom to top; the package root (zsdet/__init__.py) sits above every layer
LAYERS = (("compat", "utils"), ("data",), ("evaluation",), ("synthesis",), ("modeling",), ("config",), ("engine",))
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}
ROOT_LEVEL = len(LAYERS)


def module_name(path: Path) -> str:
    """``zsdet/data/feature_bank.py`` -> ``zsdet.data.feature_bank``; a package's ``__init__.py`` -> its name."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def level_of(module: str) -> int:
    """Layer of a ``zsdet`` module; a name of the package root (``zsdet.get_zsdet_cfg``) is the root's."""
    parts = module.split(".")
    return LEVEL.get(parts[1], ROOT_LEVEL) if len(parts) > 1 else ROOT_LEVEL


def imported_modules(source: str, module: str, is_package: bool) -> List[str]:
    """Absolute names of the zsdet modules (or module attributes) ``source`` imports, wherever the
    import statement is; ``from X import a`` gives ``X.a``, since ``a`` may be a submodule."""
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names += [f"{base}.{alias.name}" for alias in node.names]
    return [n for n in names if n == "zsdet" or n.startswith("zsdet.")]


def upward_imports(source: str, module: str, is_package: bool = False) -> List[str]:
    """The imports of ``source`` (the code of ``module``) that name a layer above the module's own."""
    own = level_of(module)
    return [name for name in imported_modules(source, module, is_package) if level_of(name) > own]


def test_every_package_has_a_layer():
    children = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    children |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert children == set(LEVEL), "give every package of zsdet/ a layer here and in docs/architecture.md"


def test_no_module_imports_a_layer_above_its_own():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50
    upward = {module_name(path): upward_imports(path.read_text(), module_name(path), path.stem == "__init__")
              for path in modules}
    assert {m: names for m, names in upward.items() if names} == {}


def test_the_check_finds_upward_imports_wherever_they_are():
    in_function = "def choose():\n    from ..engine.box_classifier import balanced_rows  # dodges a cycle\n"
    assert upward_imports(in_function, "zsdet.data.roi_stream") == ["zsdet.engine.box_classifier.balanced_rows"]
    assert upward_imports("import zsdet.synthesis.trainer\n", "zsdet.utils.io") == ["zsdet.synthesis.trainer"]
    assert upward_imports("from ... import synthesis\n", "zsdet.data.mlzsl.concat") == ["zsdet.synthesis"]
    assert upward_imports("from .. import get_zsdet_cfg\n", "zsdet.engine.add_classes") == ["zsdet.get_zsdet_cfg"]
    assert upward_imports("from . import datasets\n", "zsdet.data", is_package=True) == []
    downward = "from .seeded_rng import derive_seed\nfrom ..utils.io import write_json\nimport numpy\n"
    assert upward_imports(downward, "zsdet.data.feature_source") == []
    assert upward_imports("from zsdet.data.zsd_split import ZeroShotSplit\n", "zsdet.evaluation.coco_results") == []
