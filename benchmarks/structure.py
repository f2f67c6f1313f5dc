"""The package's shape, from its code's own imports and definitions: modules and subpackages, the
depth of the import layers (subpackages and top-level modules as parts; and module by module),
import cycles, the largest files and classes.

    python -m benchmarks.structure [PACKAGE_DIR]      (default: iclight/)

Every `import` of the package's own modules counts, at any depth of a file (functions too; not
those under `if TYPE_CHECKING:`, which run no code). The depth of the layers is the longest chain
of modules each importing the next. `lint-imports` (make test) holds the layers themselves.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test)


def imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports (a name imported from a package counts as its
    submodule where there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if _type_checking(node) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        for alias in node.names:
            found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imports(path, name, set(files)) for name, path in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in g:
        if v not in index:
            visit(v)
    return found


def depth(g: dict[str, set[str]]) -> int:
    """The longest chain of modules each importing the next (cycles cut)."""
    memo: dict[str, int] = {}

    def longest(v: str, seen: frozenset[str]) -> int:
        if v in memo:
            return memo[v]
        best = 1 + max((longest(w, seen | {v}) for w in g[v] if w not in seen), default=0)
        memo[v] = best
        return best

    return max(longest(v, frozenset()) for v in g)


def layers(g: dict[str, set[str]], root: Path) -> int:
    """The depth of the import layers: the longest chain among the package's parts, a subpackage
    one part and a module at the top one part each."""
    top = root.name

    def part(m: str) -> str:
        return ".".join(m.split(".")[:2]) if m != top else m

    parts: dict[str, set[str]] = {}
    for m, deps in g.items():
        parts.setdefault(part(m), set()).update(part(d) for d in deps if part(d) != part(m))
    return depth(parts)


def classes(root: Path) -> list[dict]:
    """Every class: its lines, and its members (methods and properties, and the attributes its
    methods set on `self`)."""
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            attributes = {
                t.attr
                for n in ast.walk(node)
                if isinstance(n, ast.Assign | ast.AnnAssign)
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
            }
            lines = node.end_lineno - node.lineno + 1
            found.append({"class": f"{module_name(path, root)}.{node.name}", "lines": lines,
                          "members": len(methods | attributes)})  # fmt: skip
    return sorted(found, key=lambda c: -c["lines"])


def report(root: Path) -> dict:
    g = graph(root)
    files = {module_name(p, root): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    packages = sorted({m for m in g if (root.parent / m.replace(".", "/") / "__init__.py").is_file()})
    largest = sorted(files.items(), key=lambda kv: -kv[1])
    return {
        "modules": len(g),
        "subpackages": len(packages) - 1,
        "modules_in_one_folder_at_most": max(
            sum(1 for m in g if m.rpartition(".")[0] == pkg and m not in packages) for pkg in packages
        ),
        "layers": layers(g, root),
        "import_depth_modules": depth(g),
        "import_cycles": cycles(g),
        "largest_modules": largest[:3],
        "modules_over_400_lines": [m for m, n in largest if n > 400],
        "largest_classes": classes(root)[:3],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", type=Path, nargs="?", default=Path(__file__).resolve().parents[1] / "iclight")
    args = p.parse_args(argv)
    print(json.dumps(report(args.package.resolve()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
