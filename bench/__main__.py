"""`make bench`: prints a table of lookout's numbers against baselines from the same run."""

from __future__ import annotations

import sys

from . import exporter_bench, probe_bench
from .listener_bench import latency, shipped_defaults, throughput_and_memory
from .patience import PATIENCE


def row(metric: str, value: str, baseline: str, ratio: str, target: str, ok: bool | None) -> str:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    return f"| {metric:<34} | {value:>10} | {baseline:>10} | {ratio:>7} | {target:<18} | {verdict:<6} |"


def main() -> int:
    print("running listener benchmarks (a few minutes)...", flush=True)
    t = throughput_and_memory()
    lat = latency()
    shipped = shipped_defaults()
    rows = [
        row("metric", "lookout", "baseline", "ratio", "target", None).replace("|", "|"),
        "|" + "|".join("-" * n for n in (36, 12, 12, 9, 20, 8)) + "|",
    ]
    eps_ratio = t["lookout_eps"] / t["minimal_eps"]
    rows.append(
        row(
            "events/s, best of 3 x 20k drains",
            f"{t['lookout_eps']:.0f}",
            f"{t['minimal_eps']:.0f}",
            f"{eps_ratio:.2f}x",
            ">= 0.8x minimal",
            eps_ratio >= 0.8,
        )
    )
    for p in ("p50", "p95"):
        total, base = lat[f"latency_{p}"], lat[f"supervisord_{p}"]
        label = f"exit -> webhook {p} (100ms, no interval)"
        rows.append(row(label, f"{total * 1000:.0f} ms", f"{base * 1000:.0f} ms", f"{total / base:.2f}x",
                        "< 1000 ms" if p == "p95" else "-", total < 1.0 if p == "p95" else None))
    rows.append(row("exit -> webhook p95 (shipped timers)", f"{shipped['shipped_p95'] * 1000:.0f} ms", "-", "-",
                    "< 2000 ms", shipped["shipped_p95"] < 2.0))
    rows.append(row("150 exits at once: messages", f"{shipped['storm_messages']:.0f}", "-", "-", "<= 2",
                    shipped["storm_messages"] <= 2))
    rows.append(row("150 exits at once: crashes not named", f"{shipped['storm_lost']:.0f}", "-", "-", "0",
                    shipped["storm_lost"] == 0))
    for mark in (10_000, 100_000):
        rows.append(
            row(
                f"RSS after {mark // 1000}k events (MB)",
                f"{t[f'lookout_rss_{mark}']:.1f}",
                f"{t[f'minimal_rss_{mark}']:.1f}",
                f"{t[f'lookout_rss_{mark}'] / t[f'minimal_rss_{mark}']:.1f}x",
                "< 64 MB",
                t[f"lookout_rss_{mark}"] < 64,
            )
        )
    rows.append(row("history rows after 100k+ events", f"{t['history_rows']:.0f}", "-", "-",
                    "<= history_max_rows", t["history_rows"] <= 50_000))
    rows.append(row("store file size (MB, with WAL)", f"{t['store_mb']:.1f}", "-", "-", "bounded", None))
    growth = t["lookout_rss_100000"] - t["lookout_rss_10000"]
    base_growth = t["minimal_rss_100000"] - t["minimal_rss_10000"]
    rows.append(
        row("RSS growth 10k -> 100k (MB)", f"{growth:+.1f}", f"{base_growth:+.1f}", "-", "< 2 MB", growth < 2)
    )
    print("\nbaseline: a minimal READY/OK listener under the same supervisord, same events;")
    print("for latency, the baseline is when that listener, alone, received the EXITED event of the same")
    print("kind of kill: supervisord's own dispatch latency (lookout's nudge shortens it: listener/workers/nudge.py)\n")
    print("\n".join(rows))

    e = exporter_bench.run()
    node = e["node_exporter_p50"]
    rows = [rows[0], rows[1]]
    rows.append(row("node_exporter scrape p50", f"{node * 1000:.0f} ms", "-", "1.00x", "baseline", None))
    rows.append(row("bare getAllProcessInfo p50", f"{e['getallprocessinfo_p50'] * 1000:.0f} ms", "-",
                    f"{node / e['getallprocessinfo_p50']:.1f}x", "-", None))
    for label, name, target in (("lookout_nores", "without resources", 10), ("lookout_res", "with resources", 5)):
        p50 = e[f"{label}_p50"]
        rows.append(row(f"lookout-exporter p50 {name}", f"{p50 * 1000:.0f} ms", f"{node * 1000:.0f} ms",
                        f"{node / p50:.1f}x", f">= {target}x faster", node / p50 >= target))
        rows.append(row(f"  XML-RPC calls in {exporter_bench.SCRAPES} scrapes", f"{e[f'{label}_rpc_calls']:.0f}",
                        "-", "-", "0 (listener healthy)", e[f"{label}_rpc_calls"] == 0))
        rows.append(row(f"  exporter RSS {name} (MB)", f"{e[f'{label}_rss']:.1f}", "-", "-", "< 64 MB",
                        e[f"{label}_rss"] < 64))
    print(f"\nexporter at {exporter_bench.GROUPS * exporter_bench.PER_GROUP} programs; baseline: "
          "Debian's prometheus-node-exporter --collector.supervisord, same supervisord\n")
    print("\n".join(rows))

    p = probe_bench.run()
    rows = [rows[0], rows[1]]
    ratio = p["lookout_eps"] / p["minimal_eps"]
    rows.append(row("events/s while 200 probes run", f"{p['lookout_eps']:.0f}", f"{p['minimal_eps']:.0f}",
                    f"{ratio:.2f}x", ">= 0.8x minimal", ratio >= 0.8))
    rows.append(row("probe runs per second (measured)", f"{p['probes_per_second']:.0f}", "200", "-", "-", None))
    rows.append(row("listener CPU at 200 probes/s", f"{p['cpu_share'] * 100:.1f}%", "-", "-", "< 20% of a core",
                    p["cpu_share"] < 0.2))
    for pct in ("p50", "p95"):
        late = p[f"lateness_{pct}"]
        rows.append(row(f"probe scheduling lateness {pct}", f"{late * 1000:.1f} ms", "-", "-",
                        "< 100 ms" if pct == "p95" else "-", late < 0.1 if pct == "p95" else None))
    arrival = p["arrival_lateness_p95"]
    rows.append(row("  same, where requests arrive, p95", f"{arrival * 1000:.1f} ms", "-", "-", "< 100 ms",
                    arrival < 0.1))
    print(f"\nhealth probes: {2 * probe_bench.POOL} HTTP probes at period 1 s on a {probe_bench.POOL}-process pool "
          "while another pool's stop/start backlog drains; baseline: the minimal listener, same backlog\n")
    print("\n".join(rows))
    if PATIENCE.note():
        print("\n" + PATIENCE.note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
