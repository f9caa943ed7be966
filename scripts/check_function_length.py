#!/usr/bin/env python3
"""Lists the functions of lib/ and apps/ longer than a limit (default 150 lines), and exits 1 when
there is any. ctest runs it ("style: no function over 150 lines").

    scripts/check_function_length.py [--limit N] [--top K] [ROOT]

A function is a brace-delimited body that follows a parameter list at namespace or class scope
(free functions, member functions defined in or out of their class, constructors); its length
counts the lines from the one holding its name to the closing brace. Lambdas and local classes
belong to the function that holds them. Comments, string and character literals are blanked
before the braces are matched, so braces inside them do not count.
"""
import argparse
import re
import sys
from pathlib import Path

SOURCES = ("lib", "apps")
EXTENSIONS = {".cpp", ".h", ".cu"}


def blank_literals(text):
    """The text with comments, string and char literals replaced by spaces (newlines kept)."""
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
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            end = ")" + m.group(1) + '"'
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c in "\"'":
            if c == "'" and i > 0 and text[i - 1].isalnum():  # digit separator 1'000
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


SCOPE_RE = re.compile(r"(^|[\s;}])(namespace\b[^;{]*|extern\s*$|(class|struct|union)\b[^;(){}]*)$", re.S)
CONTROL_RE = re.compile(r"\b(if|for|while|switch|catch|do|else|return)\b")


def functions(text):
    """(name, first line, last line) of every function body in `text` (literals blanked)."""
    found = []
    stack = []  # one entry per open brace: "scope" (namespace/class: look inside) or "other"
    header_start = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in ";}":
            if c == "}" and stack:
                stack.pop()
            header_start = i + 1
        elif c == "{":
            header = text[header_start:i]
            in_scope = all(k == "scope" for k in stack)
            h = header.strip()
            if in_scope and (SCOPE_RE.search(" " + h) or h.startswith('extern "C"') or h == "extern"):
                stack.append("scope")
            elif in_scope and "(" in h and not h.startswith("=") and not re.search(r"=\s*$", h) \
                    and not re.match(r"(enum)\b", h):
                # a function: skip its body at once
                name_m = re.search(r"([~\w:<>]+)\s*\(", h)
                name = name_m.group(1) if name_m else h[:40]
                first = text.count("\n", 0, header_start + (len(header) - len(header.lstrip()))) + 1
                depth, j = 1, i + 1
                while j < n and depth:
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                    j += 1
                last = text.count("\n", 0, j - 1) + 1
                # the header may start with the previous declaration's attributes/template line
                found.append((name, first, last))
                i = j
                header_start = j
                continue
            else:
                stack.append("other")
            header_start = i + 1
        i += 1
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--top", type=int, default=0, help="also list the K longest functions")
    a = ap.parse_args()
    root = Path(a.root)
    rows = []
    for d in SOURCES:
        for p in sorted((root / d).rglob("*")):
            if p.suffix in EXTENSIONS and p.is_file():
                text = blank_literals(p.read_text(encoding="utf-8"))
                for name, first, last in functions(text):
                    rows.append((last - first + 1, str(p.relative_to(root)), first, name))
    rows.sort(reverse=True)
    if a.top:
        for length, path, line, name in rows[: a.top]:
            print(f"{length:5d}  {path}:{line}  {name}")
    over = [r for r in rows if r[0] > a.limit]
    for length, path, line, name in over:
        print(f"{path}:{line}: {name} is {length} lines (limit {a.limit})", file=sys.stderr)
    print(f"{len(rows)} functions in {', '.join(SOURCES)}; {len(over)} over {a.limit} lines")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
