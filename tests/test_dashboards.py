"""Issue 4, acceptance 5: the dashboard JSON users import is valid and follows the rules."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from .harness import REPO

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))


def load(path):  # noqa: ANN001, ANN201
    return json.loads(path.read_text())


def test_json_is_what_the_generator_makes():
    result = subprocess.run([sys.executable, str(REPO / "grafana" / "build_dashboards.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_uids_titles_units_and_datasource_variable():
    assert len(DASHBOARDS) == 2
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids) and all(uids)
    for path in DASHBOARDS:
        text = path.read_text()
        assert "__inputs" not in text and "${DS_" not in text, path.name
        d = load(path)
        assert d["schemaVersion"] >= 39
        names = [v["name"] for v in d["templating"]["list"]]
        assert names[:1] == ["datasource"] and {"instance", "group", "name"} <= set(names)
        assert d["templating"]["list"][0]["type"] == "datasource"
        assert d["templating"]["list"][0]["query"] == "prometheus"
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids)
        for p in d["panels"]:
            where = f"{path.name}: panel {p['id']}"
            assert p.get("title"), where
            assert p["fieldConfig"]["defaults"].get("unit"), where
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert p["targets"], where
            for t in p["targets"]:
                assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
                assert t["expr"].strip(), where


def test_provisioning_files():
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/lookout.yaml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((REPO / "grafana/provisioning/dashboards/lookout.yaml").read_text())
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"
    assert prov["providers"][0]["options"]["path"]
