#!/usr/bin/env python3
"""Checks that the tree documents itself and nothing outside it; exits 1 with every problem.

    scripts/check_docs.py [ROOT]

1. No file cites a document a user of the repository does not have or an issue tracker: no
   "SPEC §…" / "SPEC 1.2" reference and no "issue #12" / "issue 12" anywhere in the sources,
   configs, scripts or docs. The method is docs/method.md; cite it by section.
2. docs/architecture.md and the tree agree: every folder of lib/ appears in the layering diagram
   as `lib/<name>`, and every `lib/<name>` the page mentions exists.
3. Every `docs/method.md §N` or `§N.M` citation points at a section heading of docs/method.md.
"""
import re
import sys
from pathlib import Path

TEXT = {".cpp", ".h", ".cu", ".md", ".yaml", ".yml", ".py", ".sh", ".txt", ".env", ".cmake"}
SKIP_DIRS = {".git", "build", "device-bundle", "runs", ".cache"}
SELF = Path(__file__).name
SPEC_REF = re.compile(r"\bSPEC\s*(§|\d)")
ISSUE_REF = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)
METHOD_CITE = re.compile(r"method\.md\)?\s*((?:§\d+(?:\.\d+)?(?:\s*(?:,|-|–|and)\s*)?)+)")


def tracked_files(root):
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part in SKIP_DIRS or part.startswith("build") for part in p.relative_to(root).parts):
            continue
        if p.suffix in TEXT or p.name in ("CMakeLists.txt", "Makefile", "run"):
            yield p


def method_sections(root):
    secs = set()
    for line in (root / "docs" / "method.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{2,3} (\d+(?:\.\d+)?)\.? ", line)
        if m:
            secs.add(m.group(1))
    return secs


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    problems = []
    sections = method_sections(root)
    for p in tracked_files(root):
        if p.name == SELF:
            continue
        rel = p.relative_to(root)
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if SPEC_REF.search(line):
                problems.append(f"{rel}:{n}: cites SPEC; cite docs/method.md by section instead: {line.strip()[:100]}")
            if ISSUE_REF.search(line):
                problems.append(f"{rel}:{n}: cites an issue number: {line.strip()[:100]}")
            for m in METHOD_CITE.finditer(line):
                for sec in re.findall(r"§(\d+(?:\.\d+)?)", m.group(1)):
                    if sec not in sections:
                        problems.append(f"{rel}:{n}: docs/method.md has no section §{sec}")
    arch = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    folders = sorted(d.name for d in (root / "lib").iterdir() if d.is_dir())
    for d in folders:
        if not re.search(rf"\blib/{re.escape(d)}\b", arch):
            problems.append(f"docs/architecture.md: lib/{d} exists but the page does not describe it")
    for d in sorted(set(re.findall(r"\blib/([a-z_]+)\b", arch))):
        if d not in folders:
            problems.append(f"docs/architecture.md: mentions lib/{d}, which does not exist")
    for p in problems:
        print(p, file=sys.stderr)
    print(f"checked citations, method.md sections and docs/architecture.md: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
