#!/usr/bin/env python3
"""Runs every test: host unit tests, host checks of the image and the device-tree
report, and a matrix of QEMU boots (each with a wall-clock timeout). Ends with one
line `N passed, M failed, K skipped` over everything; exit status 0 only if M is 0.

    python3 tests/run.py [--only NAME[,NAME]] [--list] [--filter TESTFILTER]
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
# Overridable so several people can test their own builds side by side.
LOGS = os.environ.get("SMMU_LOGS", os.path.join(BUILD, "logs"))
KERNEL = os.environ.get("SMMU_KERNEL", os.path.join(BUILD, "kernel.bin"))
# The virtio-blk disk. qemu.args names build/disk.img (what `make run` uses); the runner
# writes its own image next to its logs, fresh for every boot: the write test changes it,
# and two runners side by side must not share one (QEMU locks it).
DISK_ARG = "file=build/disk.img"
DISK = os.path.join(LOGS, "disk.img")
DISK_SECTORS = 2048  # 1 MiB
UBOOT = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
sys.path.insert(0, os.path.join(ROOT, "tests"))

from boots import BOOTS  # noqa: E402
import hostchecks  # noqa: E402


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def ok(self, name):
        self.passed += 1
        print(f"test {name} ... ok", flush=True)

    def fail(self, name, why):
        self.failed += 1
        self.failures.append(f"{name}: {why}")
        print(f"test {name} ... FAILED ({why})", flush=True)

    def skip(self, name, why):
        self.skipped += 1
        print(f"test {name} ... skipped ({why})", flush=True)


def host_triple():
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return re.search(r"^host: (\S+)", out, re.M).group(1)


def run_host_unit_tests(t: Tally):
    """cargo test for the host triple; its own counts are folded into the total."""
    print("== host unit tests (cargo test) ==", flush=True)
    cmd = ["cargo", "test", "--lib", "--target", host_triple()]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    with open(os.path.join(LOGS, "host-unit.log"), "w") as f:
        f.write(p.stdout + p.stderr)
    found = False
    for line in p.stdout.splitlines():
        m = re.match(r"test (\S+) \.\.\. (ok|FAILED|ignored)", line)
        if m:
            name, res = m.group(1), m.group(2)
            if res == "ok":
                t.passed += 1
            elif res == "ignored":
                t.skipped += 1
            else:
                t.fail("host::" + name, "see build/logs/host-unit.log")
        if re.match(r"test result: ", line):
            found = True
            print("host unit tests: " + line, flush=True)
    if not found or p.returncode != 0 and not t.failures:
        t.fail("host::cargo_test", f"cargo test exited {p.returncode} (see build/logs/host-unit.log)")
        print(p.stderr[-3000:])


_disk_bytes = {}


def make_disk_image(path, sectors=DISK_SECTORS):
    """A raw disk whose 512-byte sector n starts with n (8 bytes, little-endian) and the
    marker SMMUDISK, then a hash of n and the offset i (all mod 2^32): x = n*2654435761 xor
    i*40503, byte i = (x*0x45d9f3b) >> 24. src/selftest/virtio.rs checks the same."""
    if sectors not in _disk_bytes:
        out = bytearray()
        for n in range(sectors):
            base = (n * 2654435761) & 0xFFFFFFFF
            out += n.to_bytes(8, "little") + b"SMMUDISK"
            out += bytes(((((base ^ (i * 40503)) * 0x45D9F3B) & 0xFFFFFFFF) >> 24) for i in range(16, 512))
        _disk_bytes[sectors] = bytes(out)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(_disk_bytes[sectors])


class Qemu:
    """A QEMU process whose console we read line by line (and can type into)."""

    def __init__(self, argv, log_path):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, cwd=ROOT)
        self.buf = b""
        self.lock = threading.Lock()
        self.log = open(log_path, "wb")
        self.th = threading.Thread(target=self._reader, daemon=True)
        self.th.start()

    def _reader(self):
        while True:
            chunk = self.p.stdout.read1(4096)
            if not chunk:
                break
            with self.lock:
                self.buf += chunk
            self.log.write(chunk)
            self.log.flush()

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def wait_for(self, pattern, deadline):
        while time.time() < deadline:
            if re.search(pattern, self.text()):
                return True
            if self.p.poll() is not None:
                time.sleep(0.2)
                return bool(re.search(pattern, self.text()))
            time.sleep(0.05)
        return False

    def type(self, s):
        self.p.stdin.write(s.encode())
        self.p.stdin.flush()

    def finish(self, deadline):
        while time.time() < deadline and self.p.poll() is None:
            time.sleep(0.05)
        timed_out = self.p.poll() is None
        if timed_out:
            self.p.kill()
        self.p.wait()
        self.th.join(timeout=2)
        self.log.close()
        return timed_out, self.p.returncode


def base_args(board):
    path = os.path.join(ROOT, "boards", board, "qemu.args")
    args = []
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if line:
            args.append(line)
    return args


def build_argv(boot):
    argv = base_args(boot.get("board", "qemu-virt"))
    argv = [a.replace(DISK_ARG, "file=" + DISK) for a in argv]
    for old, new in boot.get("replace", {}).items():
        argv = [new if a == old else a for a in argv]
    if boot.get("smp") and "-smp" in argv:
        argv[argv.index("-smp") + 1] = str(boot["smp"])
    for opt in boot.get("drop", []):
        if opt in argv:
            i = argv.index(opt)
            del argv[i:i + 2]
    argv += boot.get("extra", [])
    if boot.get("dtb"):
        import dtbpatch  # a DTB with facts QEMU's lacks (tests/dtbpatch.py)
        argv += ["-dtb", dtbpatch.build(argv, boot["dtb"], LOGS, boot["name"])]
    if boot.get("sdcard"):
        # The board image `make image` writes, found by U-Boot's distro boot on its own.
        img = os.path.join(ROOT, "build", "image", boot["sdcard"], "sd.img")
        argv += ["-bios", UBOOT, "-drive", f"if=none,id=sd,file={img},format=raw",
                 "-device", "virtio-blk-device,drive=sd"]
    elif boot.get("uboot"):
        argv += ["-bios", UBOOT,
                 "-device", f"loader,file={KERNEL},addr={boot['load']},force-raw=on"]
    else:
        argv += ["-kernel", KERNEL, "-append", boot_args(boot)]
    return argv


def board_args(board):
    """Default boot arguments of a board (boards/<name>/bootargs)."""
    path = os.path.join(ROOT, "boards", board, "bootargs")
    if not os.path.exists(path):
        return []
    return [w for line in open(path) for w in line.split("#", 1)[0].split()]


def bench_argv(bootargs, disk, extra=(), mem=None, smp=None):
    """QEMU argv of a qemu-virt boot that runs one benchmark or profile workload (make
    bench, make profile, make profile-qemu): the board's boot arguments and then
    `bootargs`, `disk` as the virtio-blk drive (the caller makes it), `extra` QEMU options,
    and `mem`/`smp` in place of the board's when given."""
    argv = [a.replace(DISK_ARG, "file=" + disk) for a in base_args("qemu-virt")]
    if mem:
        argv[argv.index("-m") + 1] = mem
    if smp:
        argv[argv.index("-smp") + 1] = str(smp)
    words = board_args("qemu-virt") + list(bootargs)
    return argv + list(extra) + ["-kernel", KERNEL, "-append", " ".join(words)]


def patch_dtb(boot, argv):
    """For boots with `dtb_overlay`: dump QEMU's own DTB for this exact machine,
    append the overlay source (dtc syntax, `&{/path}` to extend nodes), compile it and
    boot with -dtb. Returns the new argv."""
    name = boot["name"]
    raw = os.path.join(LOGS, f"{name}.dump.dtb")
    out = os.path.join(LOGS, f"{name}.dtb")
    dump = list(argv)
    i = dump.index("-M")
    dump[i + 1] += f",dumpdtb={raw}"
    subprocess.run(dump, cwd=ROOT, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    dts = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", raw], capture_output=True, text=True,
                         check=True).stdout
    src = os.path.join(LOGS, f"{name}.dts")
    with open(src, "w") as f:
        f.write(dts + "\n" + boot["dtb_overlay"])
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", out, src], check=True)
    return argv + ["-dtb", out]


def boot_args(boot, test_filter=None):
    words = board_args(boot.get("board", "qemu-virt")) + list(boot.get("bootargs", []))
    f = test_filter or boot.get("filter")
    if f:
        words.append("test=" + f)
    return " ".join(words)


def run_boot(t: Tally, boot, test_filter=None):
    name = boot["name"]
    argv = build_argv(boot)
    make_disk_image(DISK)
    if test_filter and "-append" in argv:
        argv[argv.index("-append") + 1] = boot_args(boot, test_filter)
    elif test_filter and boot.get("sdcard"):
        # Its boot script, on the image, fixes the command line.
        t.skip(f"{name}::boot", "--filter cannot reach a boot whose command line is on its SD card image")
        return
    print(f"== boot {name}: {boot['what']} ==", flush=True)
    log = os.path.join(LOGS, f"qemu-{name}.log")
    if boot.get("sdcard"):
        r = subprocess.run(["bash", "boards/image.sh", boot["sdcard"]], cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, KERNEL=KERNEL))
        if r.returncode != 0:
            t.fail(f"{name}::image", f"boards/image.sh failed: {r.stderr.strip()[-300:]}")
            return
    if "dtb_overlay" in boot:
        try:
            argv = patch_dtb(boot, argv)
        except (subprocess.SubprocessError, OSError, ValueError) as e:
            t.fail(f"{name}::dtb", f"could not build the patched DTB: {e}")
            return
    print("   " + " ".join(shlex.quote(a) for a in argv), flush=True)
    start = time.time()
    deadline = start + boot.get("timeout", 120)
    q = Qemu(argv, log)
    if boot.get("uboot"):
        # Stop autoboot and type the commands a person types on a real board.
        if not q.wait_for(r"Hit any key to stop autoboot|=> ", deadline):
            q.finish(time.time())
            t.fail(f"{name}::uboot", f"no U-Boot prompt (log {log})")
            return
        q.type("\n")
        q.wait_for(r"=> ", deadline)
        args = boot_args(boot, test_filter)
        q.type(f"setenv bootargs '{args}'\n")
        q.type(f"booti {boot['load']} - ${{fdtcontroladdr}}\n")
    timed_out, code = q.finish(deadline)
    out = q.text()
    results = 0
    for m in re.finditer(r"^test (\S+) \.\.\. (ok|FAILED|skipped)(?: \((.*)\))?\r?$", out, re.M):
        results += 1
        tn, res, why = f"{name}::{m.group(1)}", m.group(2), m.group(3) or ""
        if res == "ok":
            t.ok(tn)
        elif res == "skipped":
            t.skip(tn, why)
        else:
            t.fail(tn, why)
    closing = re.search(r"^(\d+) passed, (\d+) failed, (\d+) skipped\r?$", out, re.M)
    secs = time.time() - start
    if "expect_abort" in boot:
        # A boot that must die loudly: every pattern printed, failure status, no hang.
        want = boot["expect_abort"]
        missing = [p for p in want["patterns"] if not re.search(p, out, re.M)]
        if timed_out:
            t.fail(f"{name}::abort_reported", f"hung for {secs:.0f}s instead of stopping (log {log})")
        elif missing:
            t.fail(f"{name}::abort_reported", f"missing {missing!r} (log {log})")
        elif code != want["exit"]:
            t.fail(f"{name}::abort_reported", f"QEMU exited {code}, expected {want['exit']}")
        else:
            t.ok(f"{name}::abort_reported")
        print(f"   ({secs:.1f}s)", flush=True)
        return
    if timed_out:
        t.fail(f"{name}::boot", f"timed out after {secs:.0f}s (log {log})")
    elif "KERNEL ABORTED" in out:
        t.fail(f"{name}::boot", f"kernel aborted (log {log})")
    elif not closing:
        t.fail(f"{name}::boot", f"no closing line, QEMU exit {code} (log {log})")
    else:
        kfail = int(closing.group(2))
        # Without semihosting the kernel powers off through PSCI: QEMU exits 0 and
        # the closing line alone carries the verdict.
        want = (0 if kfail == 0 else 1) if boot.get("semihosting", True) else 0
        if code != want:
            t.fail(f"{name}::exit_status", f"QEMU exited {code}, the closing line says {kfail} failed")
        elif results == 0:
            t.fail(f"{name}::boot", "ran no test")
        else:
            t.ok(f"{name}::boot")
    print(f"   ({secs:.1f}s)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated boot names (and 'host')")
    ap.add_argument("--filter", help="in-kernel test filter passed as test=")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-host", action="store_true", help="skip host unit tests and host checks")
    ap.add_argument("--soak", action="store_true", help="run only the long soak boots (make soak)")
    a = ap.parse_args()
    os.makedirs(LOGS, exist_ok=True)
    if a.list:
        print("host")
        for b in BOOTS:
            print(f"{b['name']}: {b['what']}")
        return 0
    only = set(a.only.split(",")) if a.only else None
    t = Tally()
    if (not only or "host" in only) and not a.no_host:
        run_host_unit_tests(t)
        hostchecks.run(t, ROOT, host_triple())
    for b in BOOTS:
        if only and b["name"] not in only:
            continue
        if bool(b.get("soak")) != a.soak:
            continue
        if (b.get("uboot") or b.get("sdcard")) and not os.path.exists(UBOOT):
            t.skip(f"{b['name']}::boot", f"{UBOOT} missing (run make setup)")
            continue
        run_boot(t, b, a.filter)
    if t.failures:
        print("\nfailures:")
        for f in t.failures:
            print("  " + f)
    print(f"\n{t.passed} passed, {t.failed} failed, {t.skipped} skipped", flush=True)
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
