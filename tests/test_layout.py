"""The package's shape: imports run down the layers of the data path, and no
module reaches into another's underscore names."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modgap"

# data -> embed -> metrics -> adapt -> viz / widgets, with the registry of the
# bundled model at the bottom; a module may import its own layer and those below
LAYERS = {
    "zoo": 0, "claims": 0,
    "data": 1, "cache": 1, "io": 1, "validation": 1, "distributed": 1,
    "embed": 2, "models": 2,
    "metrics": 3, "viz": 3, "evaluate": 3,
    "adapt": 4, "pretrain": 4,
    "widgets": 5, "cli": 5, "__main__": 5,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package's own face, modgap/__init__.py
    return LAYERS.get(parts[1])


def _imports(path: Path, module: str):
    """``(line, imported module, names)`` for every import of a modgap module
    in ``path``, the file of ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "modgap" or target.startswith("modgap."):
                names = [a.name for a in node.names]
                # "from . import x" imports the module modgap.x
                if node.module is None:
                    for name in names:
                        yield node.lineno, f"{target}.{name}", []
                else:
                    yield node.lineno, target, names
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("modgap"):
                    yield node.lineno, alias.name, []


def _attribute_uses(path: Path):
    """``(line, alias, attribute)`` for ``alias._name`` where ``alias`` is a
    modgap module imported under that name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("modgap")):
            aliases.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name.startswith("modgap"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield node.lineno, node.value.id, node.attr


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = sorted({_module_name(f) for f in FILES if _layer(_module_name(f)) is None}
                     - {"modgap"})
    assert not missing, f"modules with no layer in tests/test_layout.py: {missing}"


def _problems(path: Path, module: str) -> list[str]:
    own = _layer(module)
    problems = []
    for line, target, names in _imports(path, module):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            problems.append(f"line {line}: imports the underscore name(s) {private} of {target}")
        last = target.split(".")[-1]
        if last.startswith("_") and not (last.startswith("__") and last.endswith("__")):
            problems.append(f"line {line}: imports the private module {target}")
        theirs = _layer(target)
        if own is not None and theirs is not None and theirs > own:
            problems.append(f"line {line}: {module} (layer {own}) imports {target} (layer {theirs}), "
                            "a higher layer")
    for line, alias, attr in _attribute_uses(path):
        problems.append(f"line {line}: uses {alias}.{attr}, an underscore name of another module")
    return problems


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_run_down_the_layers_and_leave_underscore_names_alone(path):
    module = _module_name(path)
    problems = _problems(path, module)
    assert not problems, f"{module}:\n  " + "\n  ".join(problems)


def test_the_check_finds_what_it_looks_for(tmp_path):
    """An import running up the layers, an underscore import and an
    underscore attribute of an imported module are each caught."""
    fake = tmp_path / "containers.py"
    fake.write_text("from ..adapt.reclip import _norm_params\n"
                    "from .. import metrics as m\n"
                    "from .files import read_image\n"
                    "x = m._pair_index\n")
    problems = _problems(fake, "modgap.data.containers")
    assert any("underscore name(s) ['_norm_params']" in p for p in problems)
    assert any("imports modgap.adapt.reclip (layer 4), a higher layer" in p for p in problems)
    assert any("imports modgap.metrics (layer 3), a higher layer" in p for p in problems)
    assert any("uses m._pair_index" in p for p in problems)
    assert not any("files" in p for p in problems)
