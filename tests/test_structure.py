"""The package structure: one namespace, a leaf spec, imports that point one way and never loop.

Every module's imports (lazy ones inside functions included) are read from its
source, so a cycle or an arrow back up fails here even when no test happens
to import the two modules in the order that would break.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import deltarnn

#: The layers, from the ground up. A module may import its own layer and those below it.
LAYERS = {
    "deltarnn.spec": 0,
    "deltarnn.models": 1, "deltarnn.hw": 1,
    "deltarnn.quant": 2, "deltarnn.fpga": 2,
    "deltarnn.device": 3, "deltarnn.speech": 3,
    "deltarnn.sim": 4,
    "deltarnn.cli": 5,
    "deltarnn": 5,        # the package's own lazy attributes
}
#: What each layer may import from the project, beyond the layers below it in the table above:
#: the gateware stands on the spec alone, device and speech never import each other.
FORBIDDEN = {
    "deltarnn.hw": ("deltarnn.models",),
    "deltarnn.models": ("deltarnn.hw",),
    "deltarnn.fpga": ("deltarnn.quant", "deltarnn.models"),
    "deltarnn.quant": ("deltarnn.hw",),
    "deltarnn.device": ("deltarnn.speech", "deltarnn.hw", "deltarnn.fpga"),
    "deltarnn.speech": ("deltarnn.device", "deltarnn.hw", "deltarnn.fpga"),
}
ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    """Every module of the distribution, by dotted name, from the package directories it installs."""
    import deltarnn.fpga
    import deltarnn.hw
    import deltarnn.sim

    out = {}
    for pkg in (deltarnn, deltarnn.hw, deltarnn.sim, deltarnn.fpga):
        base = Path(pkg.__file__).parent
        for f in base.rglob("*.py"):
            rel = f.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join((pkg.__name__, *rel))] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules that ``name`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    return max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len)


def test_the_walk_sees_every_package():
    for name in ("deltarnn.spec.contract", "deltarnn.spec.memory_map", "deltarnn.quant.golden", "deltarnn.hw.core",
                 "deltarnn.sim.cosim", "deltarnn.fpga.synth", "deltarnn.cli", "deltarnn.speech.train"):
        assert name in MODULES
    assert "deltarnn.spec.contract" in GRAPH["deltarnn.quant.golden"]
    assert "deltarnn.spec.memory_map" in GRAPH["deltarnn.hw.core"]


def test_no_import_cycle():
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(GRAPH)))
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_imports_point_down_the_layers():
    wrong = []
    for name, targets in GRAPH.items():
        mine = _layer(name)
        for t in targets:
            theirs = _layer(t)
            if LAYERS[theirs] > LAYERS[mine] or any(t == f or t.startswith(f + ".") for f in FORBIDDEN.get(mine, ())):
                wrong.append(f"{name} -> {t}")
    assert wrong == []


def test_the_spec_is_a_leaf():
    for name in (n for n in MODULES if _layer(n) == "deltarnn.spec"):
        tree = ast.parse(MODULES[name].read_text())
        top = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        top |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        assert top <= set(sys.stdlib_module_names) | {"numpy", "__future__"}, name


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_gateware_and_spec_import_without_torch(tmp_path):
    r = _python("import sys, deltarnn.hw.core, deltarnn.hw.cycles, deltarnn.hw.drive\n"
                "assert 'torch' not in sys.modules, 'torch'\n"
                "assert 'deltarnn.quant.qmodel' not in sys.modules, 'qmodel'\n"
                "import deltarnn.spec.memory_map\n", tmp_path)
    assert r.returncode == 0, r.stderr
    r = _python("import sys, deltarnn, deltarnn.spec.contract, deltarnn.spec.cells, deltarnn.spec.memory_map\n"
                "assert not {'torch', 'amaranth'} & set(sys.modules), sorted(sys.modules)\n", tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["hw", "sw", "sim", "fpga"])
def test_no_generic_top_level_names(name, tmp_path):
    r = _python(f"import {name}", tmp_path)
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_the_wheel_installs_one_namespace(tmp_path):
    """The built wheel holds deltarnn/{hw,sim,fpga,...} and nothing at the top level but deltarnn."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("deltarnn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"deltarnn"}
    expected = {"deltarnn/hw/core.py", "deltarnn/sim/tb_core.py", "deltarnn/fpga/synth.py",
                "deltarnn/spec/contract.py", "deltarnn/cli/__init__.py", "deltarnn/speech/datasets/phones.py"}
    assert expected <= set(names)
    installed = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
    assert installed == set(MODULES)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    r = _python(f"import sys; sys.path.insert(0, {str(site)!r}); import deltarnn.hw.core, deltarnn.sim, deltarnn.fpga\n"
                f"assert deltarnn.hw.core.__file__.startswith({str(site)!r}), deltarnn.hw.core.__file__\n", tmp_path)
    assert r.returncode == 0, r.stderr
