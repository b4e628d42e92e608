#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a cycle.

    import-cycles.py SRC_DIR...

A module is a top-level file or directory of SRC_DIR (`foo.rs`, `foo/`);
an import is any `crate::foo` in its code (comment lines are passed over).
Prints every cycle with the line of each import in it; exits 1 if any.
"""
import glob
import os
import re
import sys


def imports(src):
    graph, where = {}, {}
    for path in glob.glob(os.path.join(src, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, src)
        module = rel.split(os.sep)[0].removesuffix(".rs")
        if module in ("lib", "main"):
            module = "crate"
        graph.setdefault(module, set())
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.lstrip().startswith("//"):
                    continue
                for dep in re.findall(r"crate::(\w+)", line):
                    if dep != module:
                        graph[module].add(dep)
                        where.setdefault((module, dep), f"{path}:{n}")
    return graph, where


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(dirs):
    bad = False
    for src in dirs:
        graph, where = imports(src)
        for component in cycles(graph):
            bad = True
            print(f"{src}: import cycle between {', '.join(component)}")
            for a in component:
                for b in sorted(graph[a] & set(component)):
                    print(f"  {a} -> {b} ({where[(a, b)]})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
