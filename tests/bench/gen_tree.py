#!/usr/bin/env python3
"""Deterministic generator of source-like trees for the ws benchmarks.

    gen_tree.py OUT_DIR --files N             # generate (OUT_DIR absent or empty)
    gen_tree.py OUT_DIR --modify K --seed S   # change K files of an existing tree

Generation: N regular files (plus ~1% symlinks, a few empty directories).
At N=100000 the tree holds ~1 GiB; sizes scale linearly with N. The mix:

  * ~89%   small text files, 1-16 KiB (log-uniform), made of source-like lines
  * 1.5%   shell scripts (text, mode 0755)
  * 3%     medium text files, 16-96 KiB
  * 3.5%   binary files, 1-256 KiB (half incompressible, half with zero runs)
  * 0.5%   binary executables, 8-256 KiB (mode 0755)
  * 0.05%  large files, 1-12 MiB (half text, half binary; at least 2)
  * ~1%    relative symlinks to files of the tree, plus 2 dangling ones
  * 3 + N/50000 empty directories

Directories hold 10-30 files each and nest up to depth 8.

Same arguments -> byte-identical tree (contents, names, modes, link targets):
everything is planned from one seeded random.Random before anything is
written. File contents are cut from pre-made pools (a pool of source lines for
text, random.randbytes for binary data), so that ~1 GiB is written in seconds
rather than calling the RNG per byte. Every text file starts with a header
naming its own path, so no two files are identical (a content-addressed store
must not get to deduplicate the benchmark tree away).

--modify K --seed S picks K regular files in K different directories (when the
tree has that many), deterministically from the tree's sorted listing and S,
and changes their content: text files get a line replaced and a line inserted
(so a text diff has something to show), binary files get bytes flipped. The
new content is written to a temporary file and renamed over the old one, so a
file hardlinked elsewhere (e.g. from a store checkout) is never changed
through the link.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

SEED = 0x5EED_2025
MAX_DEPTH = 8
KIB = 1024
MIB = 1024 * KIB

# --------------------------------------------------------------------------
# vocabulary

_SYLLABLES = (
    "ab ac ad al am an ar as at ba be bi bo ca ce ci co da de di do du el em en er "
    "es et fa fe fi fo ga ge gi go ha he hi ho id il im in io ir is it ka ke ki ko "
    "la le li lo lu ma me mi mo mu na ne ni no nu ob od ol om on op or os ot pa pe "
    "pi po pu ra re ri ro ru sa se si so su ta te ti to tu ul um un ur us va ve vi "
    "vo xa xe ya ye za ze zi"
).split()

_DIR_WORDS = (
    "src lib core util utils net fs io mm kernel drivers include tests test docs "
    "tools scripts build cmd api internal pkg server client proto common arch "
    "crypto sched ipc block sound video gpu usb pci acpi firmware examples bench "
    "config runtime parser codegen ast ir vm gc sync http rpc storage cache index "
    "query plan exec types model view controller ui widgets assets i18n"
).split()

_TEXT_EXTS = ("rs", "c", "h", "py", "go", "js", "ts", "cc", "hpp", "java", "md",
              "txt", "toml", "json", "yaml", "proto")
_BIN_EXTS = ("png", "jpg", "o", "a", "so", "gz", "bin", "woff2", "pdf", "jar", "zip")
_LARGE_TEXT_EXTS = ("log", "sql", "csv", "json", "c")
_LARGE_BIN_EXTS = ("tar", "bin", "pack", "so", "db")
_TYPES = ("u8", "u32", "u64", "i64", "usize", "bool", "String", "Vec<u8>",
          "Option<Node>", "Result<(), Error>", "HashMap<String, u64>", "&str",
          "int", "char *", "size_t", "struct inode *", "const void *")
_OPS = ("==", "!=", "<", ">", "<=", ">=", "&&", "||", "+", "-", "*", "/", "%")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))


def _ident(rng: random.Random) -> str:
    parts = [_word(rng) for _ in range(rng.randint(1, 3))]
    return "_".join(parts)


def _camel(rng: random.Random) -> str:
    return "".join(_word(rng).capitalize() for _ in range(rng.randint(1, 3)))


def _make_line_pool(rng: random.Random, target_bytes: int) -> tuple[bytes, list[int]]:
    """A pool of source-like lines (~target_bytes) and the offsets where lines start.

    Text files are built from runs of consecutive pool lines: cheap to cut,
    and diffs between such files look like diffs between source files.
    """
    idents = [_ident(rng) for _ in range(3000)]
    types = [_camel(rng) for _ in range(400)] + list(_TYPES)
    words = [_word(rng) for _ in range(2000)]

    def I() -> str:
        return rng.choice(idents)

    def T() -> str:
        return rng.choice(types)

    def N() -> str:
        return str(rng.choice((0, 1, 2, 8, 16, 42, 64, 255, 1024, rng.randint(0, 99999))))

    def A() -> str:
        return rng.choice((I(), N(), f'"{rng.choice(words)}"', f"&{I()}", f"{I()}.{I()}"))

    def W(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    templates = (
        lambda: f"let {I()} = {I()}.{I()}({A()}, {A()});",
        lambda: f"let mut {I()}: {T()} = {T()}::new();",
        lambda: f"if {I()} {rng.choice(_OPS)} {A()} {{",
        # As many closers as openers, so indentation wanders rather than drifts.
        lambda: "}",
        lambda: "}",
        lambda: "}",
        lambda: "}",
        lambda: "} else {",
        lambda: f"return {A()};",
        lambda: f"// {W(rng.randint(3, 12))}",
        lambda: f"/* {W(rng.randint(3, 10))} */",
        lambda: f"fn {I()}({I()}: {T()}, {I()}: {T()}) -> {T()} {{",
        lambda: f"pub struct {T()} {{",
        lambda: f"{I()}: {T()},",
        lambda: f"#include <{rng.choice(words)}/{I()}.h>",
        lambda: f"static int {I()}(struct {I()} *{I()}, {T()} {I()})",
        lambda: f"{I()}->{I()} = {A()};",
        lambda: f"for (i = 0; i < {N()}; i++) {{",
        lambda: f"def {I()}(self, {I()}, {I()}={N()}):",
        lambda: f"self.{I()} = {I()}({A()})",
        lambda: f"import {I()}.{I()}",
        lambda: f"match {I()} {{ {T()}::{T()} => {A()}, _ => {A()} }}",
        lambda: f'{I()}("{W(rng.randint(2, 8))}", {A()});',
        lambda: f"assert_eq!({I()}({A()}), {A()});",
        lambda: "",
    )
    lines: list[str] = []
    total = 0
    depth = 0
    while total < target_bytes:
        s = rng.choice(templates)()
        if s.startswith("}"):
            depth = max(depth - 1, 0)
        line = ("    " * depth + s) if s else ""
        if s.endswith("{"):
            depth = min(depth + 1, 6)
        lines.append(line + "\n")
        total += len(line) + 1
    pool = "".join(lines).encode()
    starts = [0] * len(lines)
    off = 0
    for i, line in enumerate(lines):
        starts[i] = off
        off += len(line)
    return pool, starts


# --------------------------------------------------------------------------
# content


class Content:
    """Cuts file contents out of the pre-made pools."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool, self.starts = _make_line_pool(rng, 4 * MIB)
        self.nlines = len(self.starts)

    def text(self, header: str, size: int, shebang: bool = False) -> bytes:
        """Text of about `size` bytes (cut at a line end), starting with `header`."""
        rng, pool, starts = self.rng, self.pool, self.starts
        head = ("#!/bin/sh\n# " if shebang else "// ") + header + "\n"
        parts = [head.encode()]
        have = len(parts[0])
        while have < size:
            # A run of 4-60 consecutive pool lines: reads like a function body.
            i = rng.randrange(self.nlines - 64)
            j = i + rng.randint(4, 60)
            chunk = pool[starts[i]:starts[j]]
            if have + len(chunk) > size:
                cut = pool.rfind(b"\n", starts[i], starts[i] + (size - have)) + 1
                chunk = pool[starts[i]:cut] if cut > starts[i] else pool[starts[i]:starts[i + 1]]
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def binary(self, header: str, size: int, zero_runs: bool) -> bytes:
        """`size` bytes of binary data, unique per file.

        zero_runs=False: incompressible (images, archives); True: random
        blocks interleaved with zero padding, compressing roughly 2:1 like
        object files.
        """
        rng = self.rng
        head = b"\x7fBIN\0" + header.encode() + b"\0"
        if not zero_runs:
            return (head + rng.randbytes(max(size - len(head), 0)))[:size]
        parts = [head]
        have = len(head)
        while have < size:
            n = rng.randint(64, 4096)
            parts.append(rng.randbytes(n))
            parts.append(bytes(rng.randint(64, 4096)))
            have += len(parts[-1]) + n
        return b"".join(parts)[:size]


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# --------------------------------------------------------------------------
# planning


class Plan:
    def __init__(self) -> None:
        self.dirs: list[str] = []  # relative paths, parents before children ("" = root)
        self.empty_dirs: list[str] = []
        # (relpath, kind, size, mode); kind in text/script/medium/binary/exebin/large_text/large_bin
        self.files: list[tuple[str, str, int, int]] = []
        self.links: list[tuple[str, str]] = []  # (relpath, target as stored in the link)


def _unique_name(rng: random.Random, taken: set[str], make) -> str:
    for _ in range(100):
        name = make()
        if name not in taken:
            taken.add(name)
            return name
    # Vocabulary exhausted for this dir: disambiguate with a counter.
    base = make()
    n = 2
    while f"{base}{n}" in taken:
        n += 1
    taken.add(f"{base}{n}")
    return f"{base}{n}"


def plan_tree(rng: random.Random, nfiles: int) -> Plan:
    plan = Plan()

    # Files per directory: 10-30, so about nfiles/20 directories.
    counts: list[int] = []
    left = nfiles
    while left > 0:
        c = min(rng.randint(10, 30), left)
        counts.append(c)
        left -= c

    # Directory tree: each new directory hangs under a random existing one
    # (a random recursive tree: bushy near the root, a long thin tail),
    # preferring shallow parents so that typical depth is 3-6 and max 8.
    names_in: dict[str, set[str]] = {"": set()}
    depth_of: dict[str, int] = {"": 0}
    plan.dirs.append("")

    def new_dir(parent: str) -> str:
        taken = names_in[parent]
        words = _DIR_WORDS
        name = _unique_name(rng, taken, lambda: rng.choice(words) if rng.random() < 0.5 else _word(rng))
        path = f"{parent}/{name}" if parent else name
        names_in[path] = set()
        depth_of[path] = depth_of[parent] + 1
        return path

    while len(plan.dirs) < len(counts):
        for _ in range(4):
            parent = rng.choice(plan.dirs)
            if depth_of[parent] < MAX_DEPTH and (depth_of[parent] < 4 or rng.random() < 0.5):
                break
        else:
            parent = ""
        plan.dirs.append(new_dir(parent))

    # File kinds: exact counts (so that 10k and 100k scale alike), then shuffled.
    nlarge = max(2, round(nfiles * 0.0005))
    kinds = (["large_text"] * (nlarge // 2) + ["large_bin"] * (nlarge - nlarge // 2)
             + ["script"] * round(nfiles * 0.015)
             + ["exebin"] * round(nfiles * 0.005)
             + ["medium"] * round(nfiles * 0.03)
             + ["binary"] * round(nfiles * 0.035))
    kinds += ["text"] * (nfiles - len(kinds))
    rng.shuffle(kinds)

    k = 0
    for d, count in zip(plan.dirs, counts):
        taken = names_in[d]
        for _ in range(count):
            kind = kinds[k]
            k += 1
            if kind in ("text", "medium"):
                ext = rng.choice(_TEXT_EXTS)
            elif kind == "script":
                ext = "sh"
            elif kind == "binary":
                ext = rng.choice(_BIN_EXTS)
            elif kind == "exebin":
                ext = ""
            elif kind == "large_text":
                ext = rng.choice(_LARGE_TEXT_EXTS)
            else:
                ext = rng.choice(_LARGE_BIN_EXTS)
            name = _unique_name(rng, taken, lambda: _ident(rng) + (f".{ext}" if ext else ""))
            size = {
                "text": lambda: _log_uniform(rng, 1 * KIB, 16 * KIB),
                "script": lambda: _log_uniform(rng, 1 * KIB, 16 * KIB),
                "medium": lambda: _log_uniform(rng, 16 * KIB, 96 * KIB),
                "binary": lambda: _log_uniform(rng, 1 * KIB, 256 * KIB),
                "exebin": lambda: _log_uniform(rng, 8 * KIB, 256 * KIB),
                "large_text": lambda: _log_uniform(rng, 1 * MIB, 12 * MIB),
                "large_bin": lambda: _log_uniform(rng, 1 * MIB, 12 * MIB),
            }[kind]()
            mode = 0o755 if kind in ("script", "exebin") else 0o644
            plan.files.append((f"{d}/{name}" if d else name, kind, size, mode))

    # Symlinks: ~1% of the file count, relative, to files anywhere in the tree
    # (mostly near the link, as in real trees: lib.so -> lib.so.1, ../include/x.h).
    for _ in range(nfiles // 100):
        d = rng.choice(plan.dirs)
        target = rng.choice(plan.files)[0]
        name = _unique_name(rng, names_in[d], lambda: "link_" + _ident(rng))
        plan.links.append((f"{d}/{name}" if d else name, os.path.relpath(target, d or ".")))
    for i in range(2):
        d = rng.choice(plan.dirs)
        name = _unique_name(rng, names_in[d], lambda: f"dangling_{i}_" + _word(rng))
        plan.links.append((f"{d}/{name}" if d else name, "../does-not-exist/missing.h"))

    # A few empty directories (build outputs, caches).
    for _ in range(3 + nfiles // 50000):
        parent = rng.choice([d for d in plan.dirs if depth_of[d] < MAX_DEPTH])
        plan.empty_dirs.append(new_dir(parent))
    return plan


# --------------------------------------------------------------------------
# writing


def _write_file(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view[:8 * MIB])
            view = view[n:]
    finally:
        os.close(fd)


def generate(out: str, nfiles: int) -> None:
    t0 = time.monotonic()
    if os.path.exists(out):
        if not os.path.isdir(out) or os.listdir(out):
            sys.exit(f"gen_tree: {out} exists and is not an empty directory")
    else:
        os.makedirs(out)
    # Modes are part of the tree: 0644/0755 must come out exact whatever the
    # caller's umask (a umask of 077 would otherwise change the tree).
    os.umask(0o022)
    rng = random.Random(SEED * 1_000_003 + nfiles)
    plan = plan_tree(rng, nfiles)
    content = Content(random.Random(SEED + nfiles))

    for d in plan.dirs[1:] + plan.empty_dirs:
        os.mkdir(os.path.join(out, d), 0o755)
    os.chmod(out, 0o755)

    total = 0
    for rel, kind, size, mode in plan.files:
        if kind in ("text", "medium", "large_text"):
            data = content.text(rel, size)
        elif kind == "script":
            data = content.text(rel, size, shebang=True)
        elif kind == "binary":
            data = content.binary(rel, size, zero_runs=rel.endswith((".o", ".a", ".so", ".bin")))
        elif kind == "exebin":
            data = content.binary(rel, size, zero_runs=True)
        else:
            data = content.binary(rel, size, zero_runs=False)
        _write_file(os.path.join(out, rel), data, mode)
        total += len(data)

    for rel, target in plan.links:
        os.symlink(target, os.path.join(out, rel))

    dt = time.monotonic() - t0
    depths = [d.count("/") + 1 for d in plan.dirs[1:]]
    print(
        f"gen_tree: {out}: {len(plan.files)} files, {len(plan.links)} symlinks, "
        f"{len(plan.dirs)} dirs (max depth {max(depths, default=0)}), "
        f"{len(plan.empty_dirs)} empty dirs, {total} bytes ({total / MIB:.0f} MiB) "
        f"in {dt:.1f}s",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------
# modifying


def _listing(root: str) -> list[str]:
    """Regular files of the tree, relative, sorted: the same on every run."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p) and os.path.isfile(p):
                out.append(os.path.relpath(p, root))
    out.sort()
    return out


def _is_text(data: bytes) -> bool:
    return b"\0" not in data[:8192]


def modify(root: str, k: int, seed: int) -> None:
    t0 = time.monotonic()
    if not os.path.isdir(root):
        sys.exit(f"gen_tree: {root} is not a directory")
    os.umask(0o022)
    rng = random.Random(SEED ^ (seed * 7919 + k))
    files = _listing(root)
    if not files:
        sys.exit(f"gen_tree: {root} has no regular files to modify")
    by_dir: dict[str, list[str]] = {}
    for f in files:
        by_dir.setdefault(os.path.dirname(f), []).append(f)
    # One file per directory while there are directories left, so the changes
    # are spread over the tree rather than bunched in one place.
    dirs = sorted(by_dir)
    rng.shuffle(dirs)
    chosen: list[str] = []
    used: set[str] = set()
    while len(chosen) < min(k, len(files)):
        for d in dirs:
            if len(chosen) >= min(k, len(files)):
                break
            cands = [f for f in by_dir[d] if f not in used]
            if cands:
                f = rng.choice(cands)
                used.add(f)
                chosen.append(f)

    for n, rel in enumerate(chosen):
        path = os.path.join(root, rel)
        with open(path, "rb") as fh:
            data = fh.read()
        stamp = f"modified by gen_tree --seed {seed} (#{n}, token {rng.getrandbits(64):016x})"
        if _is_text(data) and data:
            lines = data.splitlines(keepends=True)
            # Replace one line and insert another elsewhere: a real edit.
            i = rng.randrange(len(lines))
            lines[i] = f"    let {stamp.split()[0]}_{n} = {rng.randint(0, 1 << 30)}; // {stamp}\n".encode()
            j = rng.randrange(len(lines) + 1)
            lines.insert(j, f"// {stamp}\n".encode())
            new = b"".join(lines)
        elif data:
            # Flip a run of bytes somewhere in the file (same size, new content).
            ba = bytearray(data)
            off = rng.randrange(len(ba))
            for x in range(off, min(off + 64, len(ba))):
                ba[x] ^= 0xFF
            new = bytes(ba) + stamp.encode()
        else:
            new = stamp.encode() + b"\n"
        st = os.lstat(path)
        tmp = path + ".gen_tree.tmp"
        _write_file(tmp, new, st.st_mode & 0o7777)
        os.replace(tmp, path)
        print(f"modified {rel}", file=sys.stderr)
    print(f"gen_tree: modified {len(chosen)} files in {time.monotonic() - t0:.1f}s", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--files", type=int, help="generate a tree of N regular files")
    g.add_argument("--modify", type=int, metavar="K", help="modify K files of an existing tree")
    ap.add_argument("--seed", type=int, default=1, help="seed for --modify (default 1)")
    args = ap.parse_args()
    if args.files is not None:
        if args.files < 1:
            ap.error("--files must be positive")
        generate(args.out_dir, args.files)
    else:
        if args.modify < 1:
            ap.error("--modify must be positive")
        modify(args.out_dir, args.modify, args.seed)


if __name__ == "__main__":
    main()
