"""Read `cargo metadata` JSON on stdin; print one entry per
crate linked into the shmcached binary: its normal dependencies, transitively,
without build scripts' and proc macros' crates (they run at build time only)."""

import json
import sys

meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = meta["resolve"]["root"]


def linked(dep):
    normal = any(k["kind"] is None for k in dep["dep_kinds"])
    kinds = {k for t in packages[dep["pkg"]]["targets"] for k in t["kind"]}
    return normal and "proc-macro" not in kinds


seen, todo = set(), [root]
while todo:
    for dep in nodes[todo.pop()]["deps"]:
        if linked(dep) and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])

for pid in sorted(seen, key=lambda i: (packages[i]["name"], packages[i]["version"])):
    p = packages[pid]
    authors = ", ".join(p.get("authors") or []) or "its authors"
    print(f"  {p['name']} {p['version']}: {p.get('license') or 'see its license file'}")
    print(f"    Copyright: {authors}")
    if p.get("repository"):
        print(f"    Source: {p['repository']}")
