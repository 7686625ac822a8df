#!/usr/bin/env python3
"""make profile: where the guest instructions of one DMA API map+unmap go, per function.

Boots the kernel with `bench=loop` (n map+unmap rounds of one page in one mode) under
`-icount shift=0` and the `tbcount` TCG plugin, which counts every execution of every
translated block. Two boots per mode, n rounds and none, and the difference divided by n
is what one round costs: exact guest instructions and loads/stores per function (inlined
code is charged to the function it was inlined from), as llvm-symbolizer names them from
build/kernel.elf.

  python3 tests/profile/profile.py [--modes lazy,bypass] [--fresh] [--n 20000] [--lines]
                                  [--dev virtio:4096 (virtio-blk reads, polling included)]
(SMMU_KERNEL=image --elf its-elf profile another build.)
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import run  # noqa: E402

PLUGIN_SRC = os.path.join(HERE, "tbcount.c")
PLUGIN = os.path.join(run.BUILD, "tbcount.so")
LOADED_RE = re.compile(r"^image:\s+loaded at (0x[0-9a-f]+)", re.M)


def plugin():
    if not os.path.exists(PLUGIN) or os.path.getmtime(PLUGIN) < os.path.getmtime(PLUGIN_SRC):
        cc = os.environ.get("CC", "cc")
        cmd = [cc, "-O2", "-Wall", "-shared", "-fPIC", "-fvisibility=hidden", "-o", PLUGIN, PLUGIN_SRC]
        subprocess.run(cmd, check=True)
    return PLUGIN


def boot(mode, n, fresh, dev, out):
    """Block counts of one `bench=loop` boot, and the image's load address."""
    run.make_disk_image(run.DISK)
    words = ["bench=loop", f"mode={mode}", f"n={n}"] + (["fresh=1"] if fresh else [])
    if dev != "edu":
        words += [f"dev={dev.split(':')[0]}"] + [f"size={s}" for s in dev.split(":")[1:]]
    icount = ["-icount", "shift=0,align=off,sleep=off", "-plugin", f"{plugin()},out={out}"]
    argv = run.bench_argv(words, run.DISK, icount)
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    log = p.stdout + p.stderr
    open(os.path.join(run.LOGS, f"profile-{mode}-{n}.log"), "w").write(log)
    m = LOADED_RE.search(log)
    done = re.search(r"^bench: loop: \d+ rounds.*", log, re.M)
    phases = re.search(r"^bench: loop: per read.*", log, re.M)
    if p.returncode != 0 or not m or not done or "ns each" not in done.group(0):
        sys.exit(f"profile boot {mode} n={n} failed (exit {p.returncode}), see {run.LOGS}/profile-{mode}-{n}.log")
    blocks = []
    for line in open(out):
        a, i, mem, runs = line.split()
        blocks.append((int(a, 16), int(i), int(mem), int(runs)))
    return blocks, int(m.group(1), 16), done.group(0) + ("\n   " + phases.group(0) if phases else "")


RUST_ESCAPES = {"$LT$": "<", "$GT$": ">", "$u20$": " ", "$u7b$": "{", "$u7d$": "}", "$C$": ",", "$RF$": "&", "..": "::"}


def demangled(name):
    """A legacy-mangled Rust path as llvm-14 leaves it, made readable."""
    name = re.sub(r"::h[0-9a-f]{16}| \(\.llvm\.\d+\)", "", name)
    for k, v in RUST_ESCAPES.items():
        name = name.replace(k, v)
    return name.replace("_<", "<").replace("kernel::", "")


def symbolize(elf, addrs, base, lines):
    """Innermost function (and with `lines`, file:line) of each block's first instruction."""
    tool = shutil.which("llvm-symbolizer")
    if not tool:
        sys.exit("llvm-symbolizer not found (Debian: apt-get install llvm)")
    query = "\n".join(hex(a - base) for a in addrs)
    p = subprocess.run([tool, "--obj", elf, "--inlining", "--demangle"], input=query, capture_output=True, text=True)
    names = {}
    for a, frames in zip(addrs, p.stdout.strip().split("\n\n")):
        f = frames.splitlines()
        name = demangled(f[0]) if f else "?"
        if lines and len(f) > 1:
            name += " @ " + f[1].split("/")[-1]
        names[a] = name
    return names


def profile(elf, mode, n, fresh, dev, lines, top):
    tag = f"{dev.replace(':', '-')}-{mode}{'-fresh' if fresh else ''}"
    runs = [boot(mode, k, fresh, dev, os.path.join(run.LOGS, f"tbcount-{tag}-{k}.txt")) for k in (n, 0)]
    base = runs[0][1]
    addrs = sorted({b[0] for r in runs for b in r[0] if b[0] >= base})
    names = symbolize(elf, addrs, base, lines)
    insns, mem = collections.Counter(), collections.Counter()
    for sign, (blocks, _, _) in zip((1, -1), runs):
        for a, i, m, r in blocks:
            k = names.get(a, "(outside the image)")
            insns[k] += sign * i * r
            mem[k] += sign * m * r
    total = sum(insns.values()) / n
    print(f"\n== {tag}: {total:.1f} instructions, {sum(mem.values()) / n:.1f} loads/stores per map+unmap ==")
    print(f"   ({runs[0][2]})")
    print(f"{'insns':>8} {'ld/st':>6}  function")
    for k, v in insns.most_common(top):
        if abs(v) / n >= 0.5:
            print(f"{v / n:8.1f} {mem[k] / n:6.1f}  {k}")
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="lazy,bypass", help="comma-separated: strict, lazy, bypass (premapped with --dev virtio)")
    ap.add_argument("--fresh", action="store_true", help="rotate over more pages than a lazy batch")
    ap.add_argument("--n", type=int, default=20000, help="rounds per boot")
    ap.add_argument("--dev", default="edu", help="edu (map+unmap of a page) or virtio[:bytes] (virtio-blk reads)")
    ap.add_argument("--lines", action="store_true", help="per source line, not per function")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--elf", default=os.path.join(run.BUILD, "kernel.elf"), help="symbols of the kernel booted")
    a = ap.parse_args()
    os.makedirs(run.LOGS, exist_ok=True)
    totals = {m: profile(a.elf, m, a.n, a.fresh, a.dev, a.lines, a.top) for m in a.modes.split(",")}
    if "bypass" in totals and len(totals) > 1:
        print()
        for m, t in totals.items():
            if m != "bypass":
                print(f"{m}: {t / totals['bypass']:.2f}x bypass in instructions")


if __name__ == "__main__":
    main()
