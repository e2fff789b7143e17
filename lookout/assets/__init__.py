"""The files a user needs besides the code: supervisord snippets, the example lookout.toml,
Grafana dashboards and provisioning, Prometheus rules and example configs.

In a wheel they are package data (lookout/assets/<kind>/); in a source checkout they are the
repository's own conf.d/, grafana/ and prometheus/ folders, which the wheel is built from.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# kind -> (package with the files, folder in a source checkout)
KINDS = {
    "conf_d": "conf.d",
    "dashboards": "grafana/dashboards",
    "provisioning": "grafana/provisioning",
    "prometheus": "prometheus",
}


def asset_dir(kind: str):  # noqa: ANN201 - a Traversable or a Path
    try:
        return resources.files(f"lookout.assets.{kind}")
    except ModuleNotFoundError:  # an editable install maps code packages only
        return REPO / KINDS[kind]
