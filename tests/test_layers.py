"""The architecture, enforced: `utils/` holds commands (files directly in it: `python -m utils.X`) and library
packages (folders), in layers. A library package imports only from packages at or below its own layer, never a
command, `rlhf_args`, `common_args` or `main_train`; and no module imports itself back through others. Every
import counts: module level, inside functions, under `if __name__ == "__main__":`. The source is read, not run."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

# Lowest first. A package may import its own modules and those of the packages before it.
LAYERS = ("core", "data", "model", "cli", "runtime", "trainers", "ppo", "sampling", "evaluation", "toy")
TOP = ("rlhf_args", "common_args", "main_train")  # the user's entry points, above every library package


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for utils/ (recursively), rlhf_args/ and the top-level entry points."""
    found = {}
    for path in [*root.glob("utils/**/*.py"), *root.glob("rlhf_args/*.py"), *root.glob("*.py")]:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) for every import of one of ours in the file, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
            out += [(node.lineno, m) for m in subs] or ([(node.lineno, node.module)] if node.module in known else [])
    return out


def kind(name: str, root: Path = ROOT) -> tuple[str, int]:
    """("library", layer) for utils/<package>/..., ("command", -) for utils/<file>, ("top", -) for the rest."""
    parts = name.split(".")
    if parts[0] == "utils" and len(parts) >= 2 and parts[1] in LAYERS:
        return "library", LAYERS.index(parts[1])
    if parts[0] == "utils" and len(parts) >= 2:
        return ("unknown" if (root / "utils" / parts[1]).is_dir() else "command"), len(LAYERS)
    return ("package" if name == "utils" else "top"), len(LAYERS) + 1


def violations(root: Path) -> list[str]:
    known = modules(root)
    edges: dict[str, set[str]] = {m: set() for m in known}
    problems = []
    for name, path in known.items():
        what, layer = kind(name, root)
        if what == "unknown":
            problems.append(f"{path.relative_to(root)}: a folder of utils/ that is not a layer ({', '.join(LAYERS)})")
        for line, target in imports(path, known):
            edges[name].add(target)
            if what != "library" or target == "utils":
                continue
            target_kind, target_layer = kind(target, root)
            if target_kind != "library" or target_layer > layer:
                problems.append(f"{path.relative_to(root)}:{line}: {name} ({LAYERS[layer]}) imports {target} "
                                f"({LAYERS[target_layer] if target_kind == 'library' else target_kind}), above it")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (or a module importing itself), as a loop."""
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges.get(v, ()):
                groups.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_layers_hold():
    assert violations(ROOT) == []


def test_layer_check_finds_an_upward_import_and_a_cycle(tmp_path):
    """The check itself can fail: a data module importing a model module (upward), a toy module importing
    main_train, and two core modules importing each other inside functions."""
    files = {
        "utils/__init__.py": "", "utils/core/__init__.py": "", "utils/data/__init__.py": "",
        "utils/model/__init__.py": "", "utils/toy/__init__.py": "",
        "utils/core/a.py": "def f():\n    from utils.core import b\n",
        "utils/core/b.py": "def g():\n    import utils.core.a\n",
        "utils/data/rows.py": "from utils.core import a\n\n\ndef h():\n    from utils.model.loading import load\n",
        "utils/model/loading.py": "from utils.data import rows\n",
        "utils/toy/demo.py": "import main_train\n",
        "utils/run.py": "from utils.toy import demo\n",  # a command may import anything
        "main_train.py": "from utils.model import loading\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = violations(tmp_path)
    assert "utils/data/rows.py:5: utils.data.rows (data) imports utils.model.loading (model), above it" in found
    assert "utils/toy/demo.py:1: utils.toy.demo (toy) imports main_train (top), above it" in found
    assert "import cycle: utils.core.a -> utils.core.b -> utils.core.a" in found
    assert "import cycle: utils.data.rows -> utils.model.loading -> utils.data.rows" in found
    assert len(found) == 4, found
