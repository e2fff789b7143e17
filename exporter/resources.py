"""CPU, memory and open fds of each program and its children: listener/procfs.py reads them
(one pass over /proc per scrape); the exporter only reports them."""

from __future__ import annotations

from ..listener.procfs import Usage, available, usage_by_root

__all__ = ["Usage", "available", "usage_by_root"]
