"""Imports run one way: train -> runtime, export -> train and runtime, and never back."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "seqnet_runtime": ("seqnet_train", "seqnet_export"),
    "seqnet_train": ("seqnet_export",),
}


def imports(package):
    """(file, imported module) for every import in ``package``, top-level or not, and every
    module named in a string of the form "module:attr" or "module.attr" of another package."""
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                yield from ((path, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                yield path, node.module
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield path, node.value.split(":")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_layering(package):
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path, module in imports(package)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, bad


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The test above can fail: a runtime module naming the training package is reported."""
    (tmp_path / "seqnet_runtime").mkdir()
    (tmp_path / "seqnet_runtime" / "x.py").write_text(
        "def f():\n    from seqnet_train.backend import TorchSession\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert [m for _, m in imports("seqnet_runtime")] == ["seqnet_train.backend"]
