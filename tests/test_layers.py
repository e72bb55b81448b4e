"""The package's layers: no module imports a module of a higher layer, and no two packages
import each other (lazy imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

import furpe

ROOT = Path(furpe.__file__).resolve().parent

#: Layers from the bottom; a module may import its own layer and those below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("furpe.core",),
    ("furpe.results", "furpe.metrics"),
    ("furpe.bodymodels",),
    ("furpe.experts",),
    ("furpe.fitting",),
    ("furpe.selection",),
    ("furpe.networks",),
    ("furpe.tracking",),
    ("furpe.config", "furpe.pipeline"),
    ("furpe.render", "furpe.io", "furpe.synthetic"),
    ("furpe.export",),
    ("furpe.datasets",),
    ("furpe.evaluation", "furpe.runner", "furpe.labels"),
    ("furpe.training",),
    ("furpe.cli", "furpe.__main__"),
)


def _layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _imports(path: Path, module: str) -> set[str]:
    """The furpe modules ``path`` imports (``import furpe`` alone is the version facade)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "furpe":
                found.update(f"furpe.{a.name}" for a in node.names)
            elif node.module.startswith("furpe."):
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = module.rsplit(".", node.level)[0]
            found.add(f"{base}.{node.module}" if node.module else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("furpe."))
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name != "furpe":  # the facade: __version__ and lazy shortcuts to the pipeline
            out[name] = path
    return out


def test_no_upward_imports() -> None:
    bad = []
    for module, path in _modules().items():
        for imported in _imports(path, module):
            if _layer(imported) > _layer(module):
                bad.append(f"{module} -> {imported}")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_circular_package_imports() -> None:
    def package(m: str) -> str:
        return ".".join(m.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module, path in _modules().items():
        for imported in _imports(path, module):
            if package(imported) != package(module):
                edges.setdefault(package(module), set()).add(package(imported))

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n}))
                   for n in edges.get(a, ()))

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if reaches(b, a, {b}))
    assert not cycles, "packages importing each other:\n" + "\n".join(cycles)
