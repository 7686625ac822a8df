#!/usr/bin/env python3
"""make profile-qemu: what a virtio-blk read costs QEMU itself, in host instructions.

`make profile` counts the guest's instructions. This counts the other side: QEMU's own
work for one read (the virtio-blk model, and the SMMU model translating every address the
device touches), which no guest-side count sees and which wall-clock ratios blur with
host noise. It boots `bench=loop dev=virtio` (n reads in one mode, nothing else) under
valgrind's callgrind, n reads and none, and prints the difference over n of the
inclusive host instruction counts of QEMU functions (exported names only: QEMU's static
functions, such as smmuv3_translate itself, are not visible, their exported callees are).

`main_loop_wait` is the I/O thread's whole share of a read: the virtqueue, every
translation the device asks for, and the completion. The vCPU thread's share is left out
on purpose: the guest polls for completion, so its count grows with how long QEMU took.
Its MMIO writes are counted (`memory_region_dispatch_write`): one doorbell per read, and in
strict mode the CMDQ_PROD write, inside which QEMU's SMMU runs the TLBI and the CMD_SYNC.

  python3 tests/profile/qemu_cost.py [--modes bypass,lazy,strict,premapped] [--n 1000] [--size 4096]
(SMMU_KERNEL=image to measure another build.) Needs valgrind; about a minute per mode.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import run  # noqa: E402

# (function, what it stands for)
FUNCTIONS = [
    ("main_loop_wait", "I/O thread: the whole device side of a read"),
    ("virtio_blk_handle_vq", "virtqueue: pop the request, submit it"),
    ("smmu_translate", "SMMU model: translations that were not bypassed"),
    ("smmu_iotlb_lookup", "  IOTLB lookups (one hash probe per level tried)"),
    ("smmu_ptw", "  table walks (IOTLB misses)"),
    ("smmu_iotlb_insert", "  IOTLB fills"),
    ("smmu_iotlb_inv_iova", "SMMU model: TLBI by address (strict's unmaps)"),
    ("smmu_iotlb_inv_asid_vmid", "SMMU model: TLBI by ASID (lazy's flushes)"),
    ("memory_region_dispatch_write", "vCPU's MMIO writes: virtio doorbell, CMDQ_PROD (the SMMU runs the commands in it)"),
]
DISK_SECTORS = 131072  # 64 MiB: n reads of `size` go round it


def boot(mode, n, size, out):
    disk = os.path.join(run.LOGS, f"qemu-cost-{mode}-{n}.img")
    run.make_disk_image(disk, DISK_SECTORS)
    words = ["bench=loop", "dev=virtio", f"mode={mode}", f"n={n}", f"size={size}"]
    argv = run.bench_argv(words, disk, mem="2G")
    # fair-sched: the polling vCPU thread must not starve the I/O thread (valgrind runs
    # one thread at a time); smc-check: TCG writes the code it runs.
    vg = ["valgrind", "--tool=callgrind", "--fair-sched=yes", "--smc-check=all-non-file", "--callgrind-out-file=" + out]
    p = subprocess.run(vg + argv, cwd=ROOT, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
    log = os.path.join(run.LOGS, f"qemu-cost-{mode}-{n}.log")
    open(log, "w").write(p.stdout + p.stderr)
    done = re.search(r"^bench: loop: \d+ rounds.*ns each", p.stdout, re.M)
    if p.returncode != 0 or not done:
        sys.exit(f"qemu-cost boot {mode} n={n} failed (exit {p.returncode}), see {log}")
    os.remove(disk)
    return inclusive(out)


def inclusive(out):
    """Inclusive instruction count per function name of one callgrind profile."""
    p = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                       capture_output=True, text=True, check=True)
    counts = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+\S*?:?(\w+)(?:'\d+)?\s+\[", line)
        if m and m.group(2) not in counts:
            counts[m.group(2)] = int(m.group(1).replace(",", ""))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="bypass,lazy,strict", help="comma-separated: bypass, lazy, strict, premapped")
    ap.add_argument("--n", type=int, default=1000, help="reads per boot")
    ap.add_argument("--size", type=int, default=4096, help="bytes per read")
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (Debian: apt-get install valgrind)")
    os.makedirs(run.LOGS, exist_ok=True)
    modes = a.modes.split(",")
    jobs = [(m, k) for m in modes for k in (a.n, 0)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        res = dict(zip(jobs, ex.map(
            lambda j: boot(j[0], j[1], a.size, os.path.join(run.LOGS, f"callgrind-{j[0]}-{j[1]}.out")), jobs)))
    per = {m: {f: (res[(m, a.n)].get(f, 0) - res[(m, 0)].get(f, 0)) / a.n for f, _ in FUNCTIONS} for m in modes}
    print(f"\nQEMU host instructions per virtio-blk read of {a.size} bytes ({a.n} reads minus none, callgrind)")
    print(f"{'function':<26}" + "".join(f"{m:>10}" for m in modes) + "  what")
    for f, what in FUNCTIONS:
        print(f"{f:<26}" + "".join(f"{per[m][f]:10.0f}" for m in modes) + f"  {what}")
    if "bypass" in per:
        base = per["bypass"]["main_loop_wait"]
        for m in modes:
            if m != "bypass" and base:
                d = per[m]["main_loop_wait"] - base
                print(f"{m}: the device side costs {d:+.0f} host instructions per read against bypass ({d / base:+.1%})")


if __name__ == "__main__":
    main()
