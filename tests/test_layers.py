"""The layering of DESIGN.md, checked on the code's own imports: core <- adapters <- entry points.

Every module under sparc/ and adapters/ (installed as sparc.adapters) is read with ``ast``: its
top-level imports, the imports inside its functions, and ``importlib.import_module("sparc....")``
calls with a literal name. Each import must run down the layers (or stay in its own), and no module
may import another module's private name (``from x import _y``).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---- the layers ------------------------------------------------------------------------------------
# core: everything in sparc/ not named below; it knows no backbone and no command line.
# adapters: the code that knows a backbone: sparc.adapters.* (adapters/) and sparc.backbones.* (each
#   backbone's demo size, batches and fixture builders, registered by name).
# entry points: the command line and what only it and users run. An entry point imports the layers
#   below it, never another entry point; only the command line (sparc.cli.*, sparc.__main__) dispatches
#   to the others.
# test support: sparc.testing and sparc.contract check the layers below them; nothing there imports them.
ADAPTERS = ("sparc.adapters", "sparc.backbones")
ENTRY_POINTS = ("sparc.cli", "sparc.__main__", "sparc.demo", "sparc.misfocus", "sparc.recipe")
DISPATCHERS = ("sparc.cli", "sparc.__main__")
TEST_SUPPORT = ("sparc.testing", "sparc.contract")

MAY_IMPORT = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "entry points": {"core", "adapters", "entry points"},
    "test support": {"core", "adapters", "test support"},
}

# Known violations, each to be removed with its cause. (importer, imported module, name): name None for
# the arrow itself, a name for a private name taken.
ALLOWED = {
}


def _under(module, prefixes):
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer(module: str) -> str:
    if _under(module, TEST_SUPPORT):
        return "test support"
    if _under(module, ADAPTERS):
        return "adapters"
    if _under(module, ENTRY_POINTS):
        return "entry points"
    return "core"


# ---- reading the imports ---------------------------------------------------------------------------

def _modules():
    """module name -> (path, is_package) for every .py file of sparc/ and adapters/."""
    out = {}
    for folder, package in ((ROOT / "sparc", "sparc"), (ROOT / "adapters", "sparc.adapters")):
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            out[".".join([package, *parts])] = (path, is_package)
    return out


MODULES = _modules()


def _target(name: str) -> str:
    """The module an imported dotted name lives in (a module, or the package or module defining it)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(module: str):
    """(line, imported module, imported name or None) for every sparc import of ``module``."""
    path, is_package = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sparc":
                    yield node.lineno, _target(alias.name), None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "sparc":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:               # `from sparc import misfocus`: the module itself
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, _target(base), alias.name
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and node.args[0].value.split(".")[0] == "sparc"
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            yield node.lineno, _target(node.args[0].value), None


def _where(module: str, line: int) -> str:
    return f"{MODULES[module][0].relative_to(ROOT)}:{line}"


# ---- the rules -------------------------------------------------------------------------------------

def test_the_layers_name_modules_that_exist():
    for name in ADAPTERS + ENTRY_POINTS + TEST_SUPPORT:
        assert name in MODULES, f"{name} is named as a layer's module but there is no such module"
    for importer, imported, name in ALLOWED:
        assert importer in MODULES and imported in MODULES, (importer, imported)
        taken = [n for _, target, n in imports(importer) if target == imported]
        assert (name in taken) if name else taken, f"{importer} no longer imports {imported} {name or ''}: drop the entry"


def test_imports_run_down_the_layers():
    wrong = []
    for module in MODULES:
        for line, target, _ in imports(module):
            if target == module or (module, target, None) in ALLOWED:
                continue
            here, there = layer(module), layer(target)
            if there not in MAY_IMPORT[here]:
                wrong.append(f"{_where(module, line)}: {module} ({here}) imports {target} ({there})")
            elif here == there == "entry points" and not _under(module, DISPATCHERS) \
                    and target.split(".")[:2] != module.split(".")[:2]:
                wrong.append(f"{_where(module, line)}: entry point {module} imports entry point {target}; "
                             "only the command line dispatches to entry points")
    assert not wrong, "imports against core <- adapters <- entry points:\n" + "\n".join(dict.fromkeys(wrong))


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for module in MODULES:
        for line, target, name in imports(module):
            if name is None or target == module or (module, target, name) in ALLOWED:
                continue
            if name.startswith("_") and not name.startswith("__"):
                wrong.append(f"{_where(module, line)}: {module} imports {target}.{name}")
    assert not wrong, "private names imported across modules:\n" + "\n".join(wrong)


def test_the_checker_sees_a_violation():
    """The reader resolves relative imports, packages and import_module, so the rules have something to bite."""
    found = {(module, target) for module in MODULES for _, target, _ in imports(module)}
    assert ("sparc.adapters.hga", "sparc.adapters.base") in found      # `from .base import ...` or absolute
    assert ("sparc.cli", "sparc.cli.misfocus") in found                 # `from sparc.cli import misfocus`
    assert layer("sparc.adapters.hme") == "adapters" and layer("sparc.cli.priors") == "entry points"
    assert "entry points" not in MAY_IMPORT["core"] and "adapters" not in MAY_IMPORT["core"]
