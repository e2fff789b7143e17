"""The dependency graph on the processes supervisord has now, and what each need's state means.

Pure, and shared: the listener's rules decide with it, `lookout status`, `lookout deps` and the
exporter show it, from the same words. The config ([[dependencies]], lookout/config/dependencies.py)
holds patterns; here they are resolved against the namespecs supervisord lists. A need pattern
that names nothing is left out (and `check-config` warns): an unknown need never suppresses anything.

A need is *ready* when its `ready` asks for it (running: RUNNING; healthy: RUNNING and every probe
of it passes, at least once; exited: EXITED as expected). It is *failing* when something went
wrong with it (BACKOFF, FATAL, an unexpected exit, stopped by someone, unhealthy, a check down, a
crash loop not over yet, RUNNING between two crashes: ready and failing at once); STARTING, or
never started, is only not ready. The likely cause of a dependant's trouble is its
deepest failing need: a failing need whose own needs are fine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .config.dependencies import CHECK_PREFIX, Dependency
from .patterns import select


@dataclass(frozen=True)
class Edge:
    need: str  # a namespec, or "check:<name>"
    ready: str  # running, healthy, exited


@dataclass(frozen=True)
class NeedFacts:
    """What the graph needs to know of one need now (from the rules' records, or the store's rows)."""

    state: str  # supervisord's state name, or UP / DOWN / UNKNOWN for a check
    stopped_by: str = ""  # operator, lookout, ""
    failed_exit: bool = False  # EXITED (or down) after an unexpected exit: not a one-shot's success
    exit_ok: bool | None = None  # its last exit was expected (None: not known)
    unhealthy: bool = False  # a probe judges it unhealthy (for a check: it is down)
    judged_healthy: bool = False  # every probe of it has passed since it started (or it has none)
    unsettled: bool = False  # its failure (a crash, a crash loop) is not over: up again, not stable yet


UP, DOWN, UNKNOWN = "UP", "DOWN", "UNKNOWN"


@dataclass(frozen=True)
class NeedState:
    need: str
    ready: bool
    failing: bool
    said: str  # "FATAL", "STOPPED by an operator", "RUNNING (unhealthy)", "STARTING", "down" (a check)


def judge(edge: Edge, facts: NeedFacts | None) -> NeedState:
    """Whether one need is ready, or failing, for one edge."""
    if facts is None:
        return NeedState(edge.need, False, False, "not known yet")
    st = facts.state
    if edge.need.startswith(CHECK_PREFIX):
        return NeedState(edge.need, st == UP, st == DOWN, {"UP": "up", "DOWN": "down"}.get(st, "not checked yet"))
    if st == "STOPPED" and facts.stopped_by:
        who = "an operator" if facts.stopped_by == "operator" else "lookout"
        return NeedState(edge.need, False, True, f"STOPPED by {who}")
    if edge.ready == "exited":
        if st == "EXITED" and facts.exit_ok and not facts.failed_exit:
            return NeedState(edge.need, True, False, "EXITED")
        failed = st in ("BACKOFF", "FATAL") or (st == "EXITED" and (facts.exit_ok is False or facts.failed_exit))
        said = f"{st} (exit not known yet)" if st == "EXITED" and not failed else st
        return NeedState(edge.need, False, failed, said)
    if st in ("BACKOFF", "FATAL") or (st == "EXITED" and facts.failed_exit):
        return NeedState(edge.need, False, True, st)
    if st == "EXITED":
        return NeedState(edge.need, False, True, "EXITED")
    if st != "RUNNING":
        return NeedState(edge.need, False, facts.unsettled and st in ("STARTING", "STOPPING"),
                         f"{st} (after a failure)" if facts.unsettled else st)
    if facts.unsettled:  # ready (what lookout starts may run), and failing (the likely cause of what fails)
        ready = edge.ready != "healthy" or (facts.judged_healthy and not facts.unhealthy)  # (its probes first)
        said = "RUNNING (not stable yet)" if ready else "RUNNING (not judged healthy yet)"
        return NeedState(edge.need, ready, True, said)
    if facts.unhealthy:
        return NeedState(edge.need, False, edge.ready == "healthy", "RUNNING (unhealthy)")
    if edge.ready == "healthy" and not facts.judged_healthy:
        return NeedState(edge.need, False, False, "RUNNING (not judged healthy yet)")
    return NeedState(edge.need, True, False, "RUNNING")


@dataclass
class Graph:
    """Edges by dependant namespec, resolved on the namespecs supervisord has."""

    edges: dict[str, tuple[Edge, ...]] = field(default_factory=dict)
    start: dict[str, bool] = field(default_factory=dict)  # lookout starts it once its needs are ready
    grace: dict[str, float] = field(default_factory=dict)
    start_timeout: dict[str, float] = field(default_factory=dict)
    dependants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # need -> its direct dependants
    unmatched: tuple[str, ...] = ()  # need patterns that name nothing (never suppress anything)
    cycles: tuple[tuple[str, ...], ...] = ()  # among the processes: broken, and said (check-config, the log)
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dependant -> its need patterns naming nothing
    ordered: tuple[str, ...] = ()  # every namespec in the graph, needs first (order())

    @classmethod
    def build(cls, deps: Iterable[Dependency], namespecs: Iterable[str]) -> Graph:
        names = list(namespecs)
        g = cls()
        unmatched: list[str] = []
        for dep in deps:
            for ns in select(dep.program, names):
                edges = list(g.edges.get(ns, ()))
                for need in dep.needs:
                    found = [need.pattern] if need.check else [n for n in select(need.pattern, names) if n != ns]
                    if not found and need.pattern not in unmatched:
                        unmatched.append(need.pattern)
                    if not found:
                        g.missing[ns] = (*g.missing.get(ns, ()), need.pattern)
                    edges += [Edge(n, need.ready) for n in found if Edge(n, need.ready) not in edges]
                g.edges[ns] = tuple(edges)
                g.start[ns] = g.start.get(ns, False) or dep.start
                g.grace[ns] = max(g.grace.get(ns, 0.0), dep.grace)
                g.start_timeout[ns] = min(g.start_timeout.get(ns, dep.start_timeout), dep.start_timeout)
        g.cycles = tuple(tuple(c) for c in g.drop_cycles())
        back: dict[str, list[str]] = {}
        for ns, edges in g.edges.items():
            for e in edges:
                back.setdefault(e.need, []).append(ns)
        g.dependants = {need: tuple(d) for need, d in back.items()}
        g.unmatched = tuple(unmatched)
        g.ordered = tuple(g._order())
        return g

    def all_dependants(self, need: str) -> list[str]:
        """Everything that needs `need`, directly or through another, nearest first."""
        out: list[str] = []
        todo = list(self.dependants.get(need, ()))
        while todo:
            ns = todo.pop(0)
            if ns not in out and ns != need:
                out.append(ns)
                todo += self.dependants.get(ns, ())
        return out

    def states(self, ns: str, facts: Callable[[str], NeedFacts | None]) -> list[NeedState]:
        return [judge(e, facts(e.need)) for e in self.edges.get(ns, ())]

    def cause(self, ns: str, facts: Callable[[str], NeedFacts | None]) -> NeedState | None:
        """The deepest failing need of ns, through needs that are not ready (failing, or waiting for
        their own needs), or None: no need of it, near or far, is failing."""
        seen = {ns}
        found: NeedState | None = None
        frontier = [s for s in self.states(ns, facts) if not s.ready or s.failing]
        while frontier:
            level = list({s.need: s for s in frontier if s.need not in seen}.values())  # each need once: diamonds
            seen.update(s.need for s in level)
            found = next((s for s in level if s.failing), found)  # a deeper one, once found, wins
            frontier = [t for s in level for t in self.states(s.need, facts) if not t.ready or t.failing]
        return found

    def order(self) -> list[str]:
        """Every namespec in the graph in dependency order (needs first): what `lookout deps` prints
        and the order in which lookout starts what waits."""
        return list(self.ordered)

    def _order(self) -> list[str]:
        """Needs first (a depth-first walk without recursion: a chain of thousands is no stack overflow)."""
        out: list[str] = []
        done: set[str] = set()
        for root in sorted(self.edges):
            stack: list[tuple[str, int]] = [(root, 0)]
            on_path = {root}
            while stack:
                ns, i = stack[-1]
                needs = [e.need for e in self.edges.get(ns, ())]
                if ns in done:
                    stack.pop()
                    on_path.discard(ns)
                elif i < len(needs):
                    stack[-1] = (ns, i + 1)
                    if needs[i] not in done and needs[i] not in on_path:
                        stack.append((needs[i], 0))
                        on_path.add(needs[i])
                else:
                    stack.pop()
                    on_path.discard(ns)
                    done.add(ns)
                    out.append(ns)
        return out

    def drop_cycles(self) -> list[list[str]]:
        """Cycles among the processes (patterns that overlap can make one the config check cannot see):
        each is broken at the edge that closes it, and returned, so that a cycle never folds two
        alerts into each other or holds two programs waiting for each other."""
        found: list[list[str]] = []
        done: set[str] = set()
        for root in sorted(self.edges):
            stack: list[tuple[str, int]] = [(root, 0)]
            path = [root]
            while stack:
                ns, i = stack[-1]
                edges = self.edges.get(ns, ())
                if ns in done or i >= len(edges):
                    stack.pop()
                    path.pop()
                    done.add(ns)
                    continue
                stack[-1] = (ns, i + 1)
                need = edges[i].need
                if need in path:
                    found.append(path[path.index(need):] + [need])
                    self.edges[ns] = tuple(e for e in edges if e.need != need)
                    stack[-1] = (ns, i)  # (the edges shifted down by one)
                elif need not in done:
                    stack.append((need, 0))
                    path.append(need)
        return found
