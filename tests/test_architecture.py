"""The package's shape: `import spattern` stays light, and the module graph has no cycle.

(The layer contract itself — imports only go down the data path — is import-linter's, in
pyproject.toml, and `.ci/run` runs `lint-imports`.)"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "spattern"
HEAVY = ("sympy", "networkx", "matplotlib", "tokenizers", "cupy", "transformers", "datasets", "statsmodels",
         "typst", "rich")


def test_import_spattern_loads_no_heavy_library():
    code = ("import sys, time, json; t = time.perf_counter(); import spattern; dt = time.perf_counter() - t; "
            f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], 'seconds': dt}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["heavy"] == [], f"import spattern pulled in {res['heavy']}"
    assert res["seconds"] < 2.0  # measured ~0.13 s on the 2-core machine; generous against a busy CI box


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path, name: str) -> set[str]:
    """spattern modules imported at module level (function bodies and TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("spattern"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod.startswith("spattern"):
                    out.add(mod)
                    out.update(f"{mod}.{a.name}" for a in node.names)

    visit(tree.body)
    return out


def test_module_graph_is_acyclic():
    files = {(_module_name(p)): p for p in PKG.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for name, path in files.items():
        for imp in _top_level_imports(path, name):
            target = imp
            while target and target not in files:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            # importing a.b.c runs a/__init__ and a/b/__init__ too: edges to those packages as well,
            # except the importer's own ancestors (already initialised when it runs)
            while target:
                if target != name and not name.startswith(target + "."):
                    g.add_edge(name, target)
                target = target.rsplit(".", 1)[0] if "." in target else ""
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles among spattern modules: {cycles[:5]}"
    assert g.number_of_edges() > 100  # the graph was really built
