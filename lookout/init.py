"""`lookout init DIR`: write out what a user needs besides the code, after `pip install`.

    DIR/conf.d/lookout.conf            the [eventlistener:lookout] snippet for supervisord
    DIR/conf.d/lookout-exporter.conf   the [program:lookout-exporter] snippet
    DIR/conf.d/lookout.toml            the example configuration, every key documented
    DIR/grafana/dashboards/*.json      the dashboards
    DIR/grafana/provisioning/...       Grafana provisioning files
    DIR/prometheus/*.yml               alert rules, example Prometheus and Alertmanager configs

Existing files are left alone unless --force.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .assets import asset_dir

LAYOUT = {"conf_d": "conf.d", "dashboards": "grafana/dashboards", "provisioning": "grafana/provisioning",
          "prometheus": "prometheus"}
WANTED = (".conf", ".toml", ".json", ".yaml", ".yml")


def _files(node, prefix: str = ""):  # noqa: ANN001, ANN202 - a Traversable
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            if child.name != "__pycache__":
                yield from _files(child, f"{prefix}{child.name}/")
        elif child.name.endswith(WANTED):
            yield f"{prefix}{child.name}", child


def init_command(directory: str, force: bool) -> int:
    root = Path(directory)
    written = skipped = 0
    for kind, where in LAYOUT.items():
        for relative, source in _files(asset_dir(kind)):
            target = root / where / relative
            if target.exists() and not force:
                print(f"exists, left alone: {target}")
                skipped += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            written += 1
            print(f"wrote {target}")
    if not written and not skipped:
        print("lookout: found no files to write (a broken installation?)", file=sys.stderr)
        return 2
    left = f", {skipped} left alone (--force overwrites)" if skipped else ""
    print(f"\n{written} file(s) written to {root}/{left}\n"
          f"next: edit {root}/conf.d/lookout.toml, then `lookout -c {root}/conf.d/lookout.toml check-config`")
    return 0
