#!/usr/bin/env python3
"""Generate a BuildStream 2 project with one `manual` element of N source files.

Usage: gen_project.py N OUTDIR

Layout:
  OUTDIR/project.conf
  OUTDIR/elements/base.bst   import of OUTDIR/base (static busybox as /bin/sh etc.)
  OUTDIR/elements/big.bst    manual element, local source OUTDIR/src (N files, 100 per dir)
  OUTDIR/elements/fail.bst   same source, build command that fails (for buildtree test)
  OUTDIR/bst.conf            user config (cache/log dirs local to OUTDIR)
"""
import os, shutil, sys

N = int(sys.argv[1])
OUT = os.path.abspath(sys.argv[2])
PER_DIR = 100
BUSYBOX = "/bin/busybox"  # Debian busybox-static: statically linked, needs nothing else

os.makedirs(OUT, exist_ok=True)
os.makedirs(f"{OUT}/elements", exist_ok=True)

# ---- base: a tiny sysroot with a static busybox and the applet links manual needs
base = f"{OUT}/base"
if not os.path.exists(f"{base}/bin/busybox"):
    os.makedirs(f"{base}/bin", exist_ok=True)
    shutil.copy2(BUSYBOX, f"{base}/bin/busybox")
    for applet in ["sh", "true", "mkdir", "cp", "echo", "cat", "ls", "rm", "env", "test", "false", "wc", "find"]:
        os.symlink("busybox", f"{base}/bin/{applet}")
    for d in ["usr", "tmp", "etc", "dev", "proc"]:
        os.makedirs(f"{base}/{d}", exist_ok=True)
    os.symlink("../bin", f"{base}/usr/bin")

# ---- src: N small text files, PER_DIR per directory, two levels deep
src = f"{OUT}/src"
marker = f"{OUT}/.src-complete-{N}"
if not os.path.exists(marker):
    shutil.rmtree(src, ignore_errors=True)
    for i in range(N):
        d = i // PER_DIR
        path = f"{src}/d{d // 100:03d}/d{d % 100:02d}"
        if i % PER_DIR == 0:
            os.makedirs(path, exist_ok=True)
        with open(f"{path}/f{i:06d}.txt", "w") as f:
            f.write(f"file {i}\nline two of file {i}\n")
    open(marker, "w").close()

def w(path, text):
    with open(path, "w") as f:
        f.write(text)

w(f"{OUT}/project.conf", """\
name: wsbench
min-version: 2.0
element-path: elements
""")

w(f"{OUT}/elements/base.bst", """\
kind: import
sources:
- kind: local
  path: base
""")

# trivial build: the minimal a manual element needs to produce a non-empty artifact
w(f"{OUT}/elements/big.bst", """\
kind: manual
build-depends:
- base.bst
sources:
- kind: local
  path: src
config:
  build-commands:
  - "true"
  install-commands:
  - mkdir -p %{install-root}/out
  - echo ok > %{install-root}/out/ok
""")

w(f"{OUT}/elements/fail.bst", """\
kind: manual
build-depends:
- base.bst
sources:
- kind: local
  path: src
config:
  build-commands:
  - echo partial > build-output.txt
  - "false"
""")

w(f"{OUT}/bst.conf", f"""\
cachedir: {OUT}/cache
logdir: {OUT}/logs
sourcedir: {OUT}/cache/sources
scheduler:
  builders: 1
  fetchers: 1
  on-error: quit
cache:
  cache-buildtrees: auto
""")
print(OUT)
