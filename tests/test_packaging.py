"""Issue 9, acceptance 4: `python -m build` makes a wheel and an sdist that install into a clean
venv and run, without claiming generic top-level names (`listener`, `exporter`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lookout.config.load import tomllib

from .conftest import fast_alerts
from .harness import REPO


def run(*cmd: str | Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_every_package_folder_is_packaged():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packaged = {Path(config["package-dir"].get(p, "")) if p in config["package-dir"] else None
                for p in config["packages"]}
    mapped = {p: Path(d) for p, d in config["package-dir"].items()}
    for top in ("listener", "exporter", "lookout"):
        for init in (REPO / top).rglob("__init__.py"):
            folder = init.parent.relative_to(REPO)
            parts = folder.parts
            name = {"listener": "lookout.listener", "exporter": "lookout.exporter", "lookout": "lookout"}[parts[0]]
            name = ".".join([name, *parts[1:]])
            assert name in config["packages"], f"{folder} is not in [tool.setuptools] packages ({name})"
    assert packaged and mapped


@pytest.fixture
def built(built_dist) -> Path:
    """Built once per run from a copy of the working tree (conftest.built_dist, shared with test_install)."""
    return built_dist


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_built_package_installs_and_runs_in_a_clean_venv(built, kind, tmp_path, supervisor_factory, webhook):
    artifact = next(built.glob("*.whl" if kind == "wheel" else "*.tar.gz"))
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    py, bindir = venv / "bin" / "python", venv / "bin"
    installed = run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", artifact)
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing importable by accident
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not
           k.startswith(("SUPERVISOR_", "LOOKOUT_"))}
    for generic in ("listener", "exporter"):
        probe = run(py, "-c", f"import {generic}", cwd=elsewhere, env=env)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, generic
    top = run(py, "-c", "import importlib.metadata as m; print(m.distribution('supervisor-lookout')"
                        ".read_text('top_level.txt'))", cwd=elsewhere, env=env)
    assert top.stdout.split() == ["lookout"]
    helped = run(bindir / "lookout", "--help", cwd=elsewhere, env=env)
    assert helped.returncode == 0 and "lookout status" in helped.stdout
    init = run(bindir / "lookout", "init", elsewhere / "etc", cwd=elsewhere, env=env)
    assert init.returncode == 0, init.stderr
    written = sorted(str(p.relative_to(elsewhere / "etc")) for p in (elsewhere / "etc").rglob("*") if p.is_file())
    assert {"conf.d/lookout.conf", "conf.d/lookout-exporter.conf", "lookout.toml",
            "grafana/dashboards/fleet-overview.json", "prometheus/rules.yml",
            "grafana/provisioning/dashboards/lookout.yaml"} <= set(written), written
    sup = supervisor_factory("[program:svc]\ncommand=sleep 1000\n", fast_alerts(webhook), listener=False).start(
        wait_listener=False)
    checked = run(bindir / "lookout-listener", "-c", sup.config_path, "--check-config", cwd=elsewhere, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"supervisor\.serverurl = unix://.*\(RUNNING\)", checked.stdout)
    for script in ("lookout-exporter", "lookout-listener"):
        assert run(bindir / script, "--help", cwd=elsewhere, env=env).returncode == 0
