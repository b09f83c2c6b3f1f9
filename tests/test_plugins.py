"""Out-of-tree methods: an entry point in group harness.methods, and the README's example."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import create_engine, text

from harness.cli import main
from harness.registry import METHODS
from tests.conftest import REPO, write_matrix

PLUGIN = '''
import torch

from harness.method import PruningMethod


class Reverse(PruningMethod):
    """Plugin demo: keeps the highest-index neurons of every layer."""

    def scores(self, pruner):
        return [torch.arange(width, dtype=torch.float, device=pruner.keep[0].device) for width in pruner.widths]
'''


@pytest.fixture
def plugin_path(tmp_path):
    """A package 'installed' the way pip leaves it: module + dist-info with entry_points.txt."""
    (tmp_path / "demo_harness_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "demo_harness_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-harness-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.methods]\nreverse_demo = demo_harness_plugin:Reverse\n")
    return tmp_path


@pytest.fixture
def fresh_registry(monkeypatch):
    """Rediscover entry points; undo every registration afterwards."""
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(METHODS, "_discovered", False)


def run_tiny(tmp_path, tiny_matrix, methods) -> list[tuple]:
    tiny_matrix.update(methods=methods, dense_baseline=False)
    tiny_matrix["train"]["steps"] = 4
    tiny_matrix["eval"].update(speed_repeats=0, analysis_examples=0)
    db = tmp_path / "r.db"
    assert main(["run", "--matrix", str(write_matrix(tmp_path, tiny_matrix)), "--db", str(db), "--no-save-models"]) == 0
    with create_engine(f"sqlite:///{db}").connect() as connection:
        return [tuple(r) for r in connection.execute(text("select method, status from jobs"))]


def test_entry_point_plugin_is_listed_and_runs(plugin_path, fresh_registry, monkeypatch, tmp_path, tiny_matrix):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), str(REPO)]))
    listed = subprocess.run([sys.executable, "-m", "harness", "list", "methods"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "reverse_demo" in listed.stdout and "highest-index neurons" in listed.stdout

    monkeypatch.syspath_prepend(str(plugin_path))
    assert "reverse_demo" in METHODS.names()
    assert run_tiny(tmp_path, tiny_matrix, ["reverse_demo"]) == [("reverse_demo", "done")]


def test_readme_example_method_runs(fresh_registry, tmp_path, tiny_matrix):
    example = (REPO / "examples" / "custom_method.py").read_text()
    assert f"```python\n{example}```" in (REPO / "README.md").read_text()  # the README shows this very file
    spec = importlib.util.spec_from_file_location("custom_method_example", REPO / "examples" / "custom_method.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the decorator registers it
    assert METHODS.get("activation_norm") is module.ActivationNorm
    assert run_tiny(tmp_path, tiny_matrix, ["activation_norm"]) == [("activation_norm", "done")]
