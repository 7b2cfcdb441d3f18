#!/usr/bin/env python3
"""The shape of the production code, measured (issue 19's plain measures).

Reads every `src/**/*.rs` of the workspace's production crates (telemetry,
hardware, edge-agent, uplink, fleet, demo) as text, after blanking comments, strings and
`#[cfg(test)]` items, and reports:

  modules    production lines per file (test modules left out), over --max-module
  functions  lines from `fn` to its closing brace, over --max-function
  cycles     import cycles between modules of one crate
  env        environment variables read outside a binary's main.rs, the
             process shell both mains share (telemetry/src/process.rs) and
             config loading (files named config.rs, config_file.rs)
  string     `Result<_, String>` in library code

An import is any path that names another module of the same crate
(`use crate::a::B`, `super::b::f()`, `use store::X` from a parent), resolved
through `use`/`pub use` re-exports to the module that defines the name. A
module naming its own submodules is its table of contents, not an import, so
edges from a module to its descendants are left out of the cycle search.

Exit status: 0 when every measure is within its limit, 1 otherwise.
usage: scripts/shape [--max-module 500] [--max-function 60] [--crate NAME]... [--not-yet MEASURE]...
"""
import argparse
import os
import re
import sys

CRATES = ["telemetry", "hardware", "edge-agent", "uplink", "fleet", "demo"]
# Where a binary's config is loaded: environment reads belong there.
CONFIG_LOADING = ("config.rs", "config_file.rs")
# The part of both binaries' main that they share (logging, signals, loading).
PROCESS_SHELL = "telemetry/src/process.rs"


def blank(text):
    """Comments, string and char literals replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + re.sub(r"[^\n]", " ", text[i + 2:j]))
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and not (i and text[i - 1].isalnum())):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append('""' + re.sub(r"[^\n]", " ", text[i + 2:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'", text[i:])
            if m:
                out.append("' '".ljust(len(m.group(0))))
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def strip_tests(code):
    """`#[cfg(test)]` items blanked (newlines kept)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]", code)
        if not m:
            return code
        k = m.end()
        brace, semi = code.find("{", k), code.find(";", k)
        if brace < 0 or (0 <= semi < brace):
            end = semi
        else:
            end = matching_brace(code, brace)
        code = code[:m.start()] + re.sub(r"[^\n]", " ", code[m.start():end + 1]) + code[end + 1:]


def line_of(code, at):
    return code.count("\n", 0, at) + 1


class Module:
    def __init__(self, krate, path, file, code):
        self.krate, self.path, self.file, self.code = krate, path, file, code


def modules_of(root):
    found = []
    for krate in CRATES:
        src = os.path.join(root, krate, "src")
        for dirpath, _, files in os.walk(src):
            for f in sorted(files):
                if not f.endswith(".rs"):
                    continue
                file = os.path.join(dirpath, f)
                rel = os.path.relpath(file, src)[:-3].split(os.sep)
                if rel[-1] == "mod":
                    rel = rel[:-1]
                if rel in (["lib"], ["main"]) or rel[:1] == ["bin"]:
                    rel = [] if rel == ["lib"] else rel
                with open(file, encoding="utf-8") as fh:
                    code = strip_tests(blank(fh.read()))
                found.append(Module(krate, tuple(rel), os.path.relpath(file, root), code))
    return found


def production_lines(m):
    return sum(1 for line in m.code.split("\n") if line.strip())


def functions(m):
    for f in re.finditer(r"\bfn\s+(\w+)", m.code):
        brace, semi = m.code.find("{", f.end()), m.code.find(";", f.end())
        if brace < 0 or (0 <= semi < brace):
            continue
        end = matching_brace(m.code, brace)
        start = m.code.rfind("\n", 0, f.start()) + 1
        yield f.group(1), line_of(m.code, start), line_of(m.code, end) - line_of(m.code, start) + 1


def use_trees(code):
    """(visibility_is_pub, [path segments]) for every leaf of every `use`."""
    for u in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", code):
        for leaf in expand(re.sub(r"\s+", "", u.group(2))):
            yield leaf


def expand(tree):
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [tree.split(" as ")[0].split("::")]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p:
            for leaf in expand(prefix + p):
                out.append([s for s in leaf if s])
    return out


def absolute(m, segs, crate_name):
    """Segments relative to module m made absolute within its crate, or None."""
    segs = [s for s in segs if s]
    if not segs:
        return None
    here = list(m.path)
    head = segs[0]
    if head in ("crate", crate_name):
        return segs[1:]
    if head == "self":
        return here + segs[1:]
    if head == "super":
        base = here
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
        return base + segs
    return here + segs  # a child module, or an item of this module


def edges(mods):
    by_crate = {}
    for m in mods:
        by_crate.setdefault(m.krate, {})[m.path] = m
    result = {}
    for krate, table in by_crate.items():
        crate_name = krate.replace("-", "_")
        names = {}  # (module, name) -> absolute path it stands for
        for m in table.values():
            for leaf in use_trees(m.code):
                target = absolute(m, leaf, crate_name)
                if target and leaf[-1] not in ("*", "self"):
                    names[(m.path, leaf[-1])] = target

        def resolve(path, hops=0):
            for k in range(len(path), 0, -1):
                if tuple(path[:k]) in table:
                    mod = tuple(path[:k])
                    if k < len(path) and (mod, path[k]) in names and hops < 20:
                        return resolve(names[(mod, path[k])] + path[k + 1:], hops + 1)
                    return mod
            if path and ((), path[0]) in names and hops < 20:
                return resolve(names[((), path[0])] + path[1:], hops + 1)
            return ()

        for m in table.values():
            refs = [leaf for leaf in use_trees(m.code)]
            refs += [p.split("::") for p in re.findall(
                r"\b(?:crate|super|self|" + crate_name + r")(?:::\w+)+", m.code)]
            for leaf in refs:
                target = absolute(m, leaf, crate_name)
                if not target:
                    continue
                mod = resolve(target)
                if mod == m.path or mod[:len(m.path)] == m.path:
                    continue  # itself, or one of its own submodules
                result.setdefault((krate, m.path), set()).add((krate, mod))
    return result


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def name(krate, path):
    return krate + "::" + ("::".join(path) if path else "(root)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-module", type=int, default=500)
    ap.add_argument("--max-function", type=int, default=60)
    ap.add_argument("--crate", action="append", help="only these crates (default: all)")
    ap.add_argument("--not-yet", action="append", default=[], choices=["modules", "functions", "cycles", "env", "string"],
                    help="report this measure but leave it out of the exit status (one not met yet)")
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    args = ap.parse_args()
    mods = [m for m in modules_of(os.path.abspath(args.root)) if not args.crate or m.krate in args.crate]
    failed = False

    big = sorted(((production_lines(m), m.file) for m in mods), reverse=True)
    over = [b for b in big if b[0] > args.max_module]
    print(f"modules over {args.max_module} production lines: {len(over)} (largest: {big[0][1]}, {big[0][0]})")
    for lines, file in over:
        print(f"  {lines:5}  {file}")

    long = sorted(((n, m.file, line, fn) for m in mods for fn, line, n in functions(m) if n > args.max_function), reverse=True)
    print(f"functions over {args.max_function} lines: {len(long)}")
    for n, file, line, fn in long:
        print(f"  {n:5}  {file}:{line} {fn}")

    found = cycles(edges(mods))
    print(f"import cycles: {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(name(k, p) for k, p in comp))

    reads = [(m.file, line_of(m.code, e.start()), e.group(0)) for m in mods
             for e in re.finditer(r"\benv::(var|var_os|vars|vars_os)\b|\bstd::env::var\w*", m.code)
             if not m.file.endswith(("main.rs", PROCESS_SHELL)) and "/bin/" not in m.file]
    loading = [r for r in reads if os.path.basename(r[0]) in CONFIG_LOADING]
    env = [r for r in reads if r not in loading]
    print(f"environment variables read outside main.rs, the process shell and config loading: {len(env)}")
    for file, line, what in env:
        print(f"  {file}:{line} {what}")
    for file, line, what in loading:
        print(f"  (config loading: {file}:{line} {what})")

    strings = [(m.file, line_of(m.code, s.start())) for m in mods
               for s in re.finditer(r"\bResult<[^;{}]*?,\s*String\s*>", m.code)
               if not m.file.endswith("main.rs")]
    print(f"Result<_, String> in library code: {len(strings)}")
    for file, line in strings:
        print(f"  {file}:{line}")

    found_by = {"modules": over, "functions": long, "cycles": found, "env": env, "string": strings}
    failed = [k for k, v in found_by.items() if v and k not in args.not_yet]
    if failed:
        print(f"over the limits: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
