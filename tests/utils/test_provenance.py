"""Provenance records: package and torch versions, the git commit when the package runs from a checkout (and no
failure when it does not), the device and the date; written into every run's result.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import robult
from robult.utils import provenance as prov_mod
from robult.utils.provenance import provenance, provenance_line

from ..conftest import TINY_SYNTHETIC

REPO = Path(__file__).resolve().parents[2]


def test_provenance_of_this_checkout() -> None:
    prov_mod.git_commit.cache_clear()  # the commit is cached per process; the checkout may have moved since
    info = provenance()
    assert info["robult"] == robult.__version__ and info["torch"] == torch.__version__
    assert info["device"] == f"cpu ({info['device'].split('(')[1]}" and "threads" in info["device"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the test tree is not a git checkout")
    assert info["git"]["commit"] == head.stdout.strip() and isinstance(info["git"]["dirty"], bool)
    assert info["date"].endswith("+00:00")
    assert f"commit {head.stdout.strip()[:12]}" in provenance_line(info)


def test_no_git_checkout_or_no_git_is_not_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "site-packages" / "robult" / "utils" / "provenance.py"  # an installed wheel
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(prov_mod, "__file__", str(fake))
    prov_mod.git_commit.cache_clear()
    try:
        assert provenance()["git"] is None
        assert "commit not a git checkout" in provenance_line(provenance())

        def no_git(*args, **kwargs):
            raise FileNotFoundError("git")

        monkeypatch.setattr(prov_mod, "__file__", str(REPO / "src" / "robult" / "utils" / "provenance.py"))
        monkeypatch.setattr(prov_mod.subprocess, "run", no_git)
        prov_mod.git_commit.cache_clear()
        assert provenance()["git"] is None
    finally:
        monkeypatch.undo()
        prov_mod.git_commit.cache_clear()


def test_a_run_records_its_provenance(tmp_path: Path) -> None:
    from robult.config import load_config
    from robult.training.run import train_run

    cfg = load_config(None, [*TINY_SYNTHETIC, f"out_dir={tmp_path}", "name=p"])
    result = train_run(cfg)
    doc = json.loads((result.run_dir / "result.json").read_text())
    info = doc["provenance"]
    assert set(info) == {"robult", "git", "torch", "python", "device", "date"}
    assert info["torch"] == torch.__version__ and info["device"].startswith("cpu (")
