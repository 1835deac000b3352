"""Guards of the layout (README, 'Architecture'): every import of the project's modules (the entry
scripts, config/, models/, utils/), read with ``ast`` wherever it is written (inside functions too),
forms no cycle, and the ground floor utils/core imports nothing above it; no module under utils/ is
over 600 lines; the hand-kept tables agree.

Imports under ``if TYPE_CHECKING:`` are left out of the cycle check (they never run: naming a type
there is how a module refers to one without importing it) but count for the floors: the ground
floor may not even name a type of an upper floor. ``importlib.import_module`` with a computed name is
not an import statement and is not seen (config/__init__.py loads its trees so, after it is loaded).
"""

import ast
import os

import pytest
from conftest import ROOT

PACKAGES = ("config", "models", "utils")
GROUND = "utils.core"
MAX_LINES = 600  # a module under utils/ longer than this does more than one job
ABOVE_GROUND = ("config", "models", "utils.methods", "utils.protocols", "utils.samplers", "utils.reporting")


def project_modules(root: str) -> dict:
    """Dotted module name -> file: the top-level scripts and every module of PACKAGES (a package is
    its ``__init__.py``)."""
    found = {name[:-3]: os.path.join(root, name) for name in os.listdir(root) if name.endswith(".py")}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in files:
                if name.endswith(".py"):
                    dotted = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = os.path.join(folder, name)
    return found


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, module: str, is_package: bool):
    """(dotted name, under TYPE_CHECKING) of every import statement below ``tree``; ``from x import
    y`` gives ``x.y`` (a submodule, or a name of x) and ``x``."""
    def visit(node, typing_only):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from ((alias.name, typing_only) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the module's package, up level - 1 more
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    package = package[:len(package) - child.level + 1]
                    base = ".".join(package + ([base] if base else []))
                yield from ((f"{base}.{alias.name}", typing_only) for alias in child.names)
                yield base, typing_only
            if isinstance(child, ast.If) and _is_type_checking(child):
                for part in child.body:
                    yield from visit(ast.Module(body=[part], type_ignores=[]), True)
                for part in child.orelse:
                    yield from visit(ast.Module(body=[part], type_ignores=[]), typing_only)
            else:
                yield from visit(child, typing_only)

    yield from visit(tree, False)


def import_graph(root: str) -> dict:
    """Module -> {imported project module: whether every such import is under TYPE_CHECKING}."""
    modules = project_modules(root)
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        edges = graph.setdefault(module, {})
        for name, typing_only in _imported_names(tree, module, path.endswith("__init__.py")):
            parts = name.split(".")
            target = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in modules),
                          None)
            if target is not None and target != module:
                edges[target] = edges.get(target, True) and typing_only
    return graph


def cycles(graph: dict) -> list:
    """The import cycles (strongly connected components of more than one module, Tarjan's algorithm)
    over the imports that run (TYPE_CHECKING ones left out), each sorted."""
    runs = {m: sorted(t for t, typing_only in edges.items() if not typing_only) for m, edges in graph.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in runs.get(module, ()):
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(runs):
        if module not in index:
            connect(module)
    return sorted(found)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def upward_imports(graph: dict) -> list:
    """(module, imported module) for each import of the ground floor from an upper floor or an entry script."""
    scripts = {m for m in graph if "." not in m and m not in PACKAGES}
    return sorted((module, target) for module, edges in graph.items() if _within(module, GROUND)
                  for target in edges if target in scripts or any(_within(target, up) for up in ABOVE_GROUND))


def script_imports(graph: dict) -> list:
    """(module, entry script) for each import of an entry script from inside a package."""
    scripts = {m for m in graph if "." not in m and m not in PACKAGES}
    return sorted((module, target) for module, edges in graph.items() if module.split(".")[0] in PACKAGES
                  for target in edges if target in scripts)


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_the_project_has_no_import_cycle(graph):
    assert cycles(graph) == []


def test_the_ground_floor_imports_nothing_above_it(graph):
    assert any(_within(m, GROUND) for m in graph) and upward_imports(graph) == []


def test_no_package_imports_an_entry_script(graph):
    assert script_imports(graph) == []


def test_the_guards_find_a_cycle_an_upward_import_and_an_import_inside_a_function(tmp_path):
    files = {
        "main_x.py": "import utils.core.a\n",
        "config/__init__.py": "",
        "utils/__init__.py": "",
        "utils/core/__init__.py": "",
        "utils/core/a.py": "from utils.core import b\n",
        "utils/core/b.py": "def f():\n    from utils.core.a import g\n",  # a -> b -> a, hidden in a function
        "utils/core/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from utils.core.d import D\n",
        "utils/core/d.py": "from utils.core.c import C\nfrom . import e\n",  # c -> d only for type checking
        "utils/core/e.py": "import config\nfrom utils.samplers.s import s\n",
        "utils/samplers/__init__.py": "",
        "utils/samplers/s.py": "import main_x\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = import_graph(str(tmp_path))
    assert found["utils.core.c"] == {"utils.core.d": True} and found["utils.core.d"]["utils.core.e"] is False
    assert cycles(found) == [["utils.core.a", "utils.core.b"]]
    assert upward_imports(found) == [("utils.core.e", "config"), ("utils.core.e", "utils.samplers.s")]
    assert script_imports(found) == [("utils.samplers.s", "main_x")]
    (tmp_path / "utils/core/b.py").write_text("")
    (tmp_path / "utils/core/c.py").write_text("from utils.core.d import D\n")  # now it runs: c -> d -> c
    assert cycles(import_graph(str(tmp_path))) == [["utils.core.c", "utils.core.d"]]


def test_no_module_under_utils_is_over_600_lines():
    long = {}
    for module, path in project_modules(ROOT).items():
        with open(path, encoding="utf-8") as fh:
            lines = sum(1 for _ in fh)
        if module.startswith("utils.") and lines > MAX_LINES:
            long[module] = lines
    assert long == {}, f"split these by job (README, 'Architecture'): {long}"


# ------------------------------------------------------------------------------------ hand-kept tables

def test_the_tables_of_scripts_agree_with_the_scripts_on_disk():
    """config.SCRIPTS (a tree per script, protocol) names the entry scripts there are, and
    tests/conftest.py's ENTRY the same scripts (tests/test_config.py); plot.py reads results and has
    no settings."""
    import config

    entry_scripts = set()
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
                if "run_cli(main)" in fh.read():
                    entry_scripts.add(name)
    assert {script.split()[0] for script in config.SCRIPTS} == entry_scripts - {"plot.py"}


def test_the_dataset_help_names_every_registered_dataset():
    import config
    from utils.core.data import list_datasets

    for script in config.SCRIPTS:
        text = config.tree(script).keys["DATASET"].help
        assert all(name in text for name in list_datasets()), (script, text)
