#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a loop.

    scripts/check-module-cycles.py            every crates/*/src and jepsen-style-tests/src
    scripts/check-module-cycles.py DIR...     those source folders
    scripts/check-module-cycles.py --self-test

Each module should stand above what it uses (docs/ARCHITECTURE.md,
"Invariants"). A module is a file (`a/b.rs` or `a/b/mod.rs` is `a::b`);
module A uses module B when A's non-test code names a path into B:
`crate::b::..`, `super::..`, `self::b::..`, or a bare `b::..` where `b` is a
submodule A declares. A parent that declares a child does not use it by
declaring it. Test modules (`#[cfg(test)] mod tests` to the end of the
file) and comments are ignored. A cycle is printed as the loop of modules.
"""
import os
import re
import sys
import tempfile

PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
BARE = re.compile(r"(?<![:\w])([a-z_][a-z0-9_]*)::(\w+)")
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", re.M)


def module_name(rel):
    m = rel[:-3]
    if m in ("lib", "main"):
        return ""
    if m.endswith("/mod"):
        m = m[: -len("/mod")]
    return m.replace(os.sep, "::")


def strip(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    t = re.search(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", src)
    return src[: t.start()] if t else src


def inline_mods(src):
    """The spans of inline `mod x { .. }` blocks."""
    spans = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", src):
        depth, i = 0, m.end() - 1
        while i < len(src):
            if src[i] == "{":
                depth += 1
            elif src[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        spans.append((m.end(), i))
    return spans


def graph(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n.endswith(".rs"):
                path = os.path.join(dirpath, n)
                files[module_name(os.path.relpath(path, root))] = strip(open(path, encoding="utf-8").read())
    # A binary's main.rs and a library's lib.rs are both the root; keep lib.
    mods = set(files)
    edges = {m: set() for m in mods}

    def longest(parts):
        for i in range(len(parts), 0, -1):
            cand = "::".join(parts[:i])
            if cand in mods:
                return cand
        return None

    for me, src in files.items():
        children = set(MOD_DECL.findall(src))
        inline = inline_mods(src)
        for m in PATH.finditer(src):
            kind, rest = m.group(1), [p for p in m.group(2).split("::") if p]
            if kind == "crate":
                target = longest(rest) or ""
            elif kind == "super":
                # Each inline `mod x { .. }` around the path takes one `super`.
                ups = 1 - sum(1 for a, b in inline if a <= m.start() < b)
                while rest and rest[0] == "super":
                    rest = rest[1:]
                    ups += 1
                base = me.split("::") if me else []
                if ups > len(base):
                    continue
                base = base[: len(base) - ups] if ups > 0 else base
                target = longest(base + rest) or "::".join(base)
            else:  # self
                base = [me] if me else []
                target = longest(base + rest) or me
            if target != me:
                edges[me].add(target)
        for m in BARE.finditer(src):
            if m.group(1) in children:
                child = f"{me}::{m.group(1)}" if me else m.group(1)
                target = longest(child.split("::") + [m.group(2)]) or child
                if target != me:
                    edges[me].add(target)
    return edges


def cycles(edges):
    """Every elementary loop found by a depth-first search, each once."""
    found, seen = [], set()
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        found.append(path + [start])
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return found


def check(roots):
    bad = 0
    for root in roots:
        for loop in cycles(graph(root)):
            bad += 1
            print(f"{root}: import cycle: " + " -> ".join(m or "(crate root)" for m in loop))
    return bad


def self_test():
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "http"))
        files = {
            "lib.rs": "pub mod http;\npub mod metrics;\n",
            "http/mod.rs": "mod handlers;\npub struct AppState;\npub fn app() { handlers::get(); }\n",
            "http/handlers.rs": "use crate::metrics::count;\npub fn get() { count(); }\n",
            "metrics.rs": "// crate::http::AppState in a comment is no use\npub fn count() {}\n",
        }
        for rel, text in files.items():
            with open(os.path.join(d, rel), "w") as f:
                f.write(text)
        assert check([d]) == 0, "a tree without a loop was reported"
        # Plant the loop metrics -> http (mod.rs) -> handlers -> metrics.
        with open(os.path.join(d, "metrics.rs"), "w") as f:
            f.write("use crate::http::AppState;\npub fn count() {}\n")
        assert check([d]) == 1, "a planted loop was not found"
        # A child using its parent's item while the parent uses the child.
        with open(os.path.join(d, "metrics.rs"), "w") as f:
            f.write("pub fn count() {}\n")
        with open(os.path.join(d, "http/handlers.rs"), "w") as f:
            f.write("use super::AppState;\npub fn get() {}\n")
        assert check([d]) == 1, "a parent <-> child loop was not found"
        # Test modules don't count.
        with open(os.path.join(d, "http/handlers.rs"), "w") as f:
            f.write("pub fn get() {}\n#[cfg(test)]\nmod tests {\n    use super::super::AppState;\n}\n")
        assert check([d]) == 0, "a test module's import was counted"
    print("check-module-cycles: self-test passed (a planted loop is caught)")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = argv[1:] or sorted(
        [os.path.join(repo, "crates", c, "src") for c in os.listdir(os.path.join(repo, "crates"))]
        + [os.path.join(repo, "jepsen-style-tests", "src")]
    )
    roots = [r for r in roots if os.path.isdir(r)]
    if not roots:
        print("check-module-cycles: no source folders found", file=sys.stderr)
        return 2
    bad = check(roots)
    if bad:
        print(f"check-module-cycles: {bad} import cycle(s): make each module stand above what it uses")
        return 1
    print(f"check-module-cycles: no import cycles in {len(roots)} source folders")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
