"""Host-side checks: the built Image's header, and `dt-report` facts on QEMU's
DTBs and on real boards' DTBs (checked by hand against `dtc -I dtb -O dts`)."""
import json
import os
import struct
import subprocess

# (fixture, expected facts) — values checked by hand against dtc output.
DT_FACTS = {
    "tests/dt/qemu-virt-smmuv3.dtb": {
        "smmus": [{"node": "/smmuv3@9050000", "base": "0x9050000", "size": "0x20000",
                   "enabled": True, "coherent": True}],
        "pci_hosts": [{"node": "/pcie@10000000", "ecam_base": "0x4010000000",
                       "ecam_size": "0x10000000", "bus_range": ["0x0", "0xff"],
                       "iommu_map": [{"rid_base": "0x0", "smmu": "/smmuv3@9050000",
                                      "sid_base": "0x0", "length": "0x10000"}]}],
    },
    "tests/dt/qemu-virt-nosmmu.dtb": {"smmus": [], "masters": []},
}


def subset(want, got, path="$"):
    """Every key/value in `want` appears in `got` (lists compared element-wise)."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{path}: expected an object"
        for k, v in want.items():
            if k not in got:
                return f"{path}.{k} missing"
            e = subset(v, got[k], f"{path}.{k}")
            if e:
                return e
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{path}: expected {len(want)} entries, got {got!r}"
        for i, (w, g) in enumerate(zip(want, got)):
            e = subset(w, g, f"{path}[{i}]")
            if e:
                return e
        return None
    return None if want == got else f"{path}: expected {want!r}, got {got!r}"


def check_image(t, root):
    name = "host::image_header"
    path = os.path.join(root, "build", "kernel.bin")
    if not os.path.exists(path):
        t.fail(name, "build/kernel.bin missing")
        return
    data = open(path, "rb").read()
    code0, _, text_offset, image_size, flags = struct.unpack_from("<IIQQQ", data, 0)
    magic = struct.unpack_from("<I", data, 56)[0]
    problems = []
    if magic != 0x644D5241:
        problems.append(f"magic {magic:#x}")
    if code0 & 0xFC000000 != 0x14000000:
        problems.append(f"code0 {code0:#x} is not a branch")
    if image_size < len(data):
        problems.append(f"image_size {image_size:#x} < file {len(data):#x}")
    if flags != 0xA:
        problems.append(f"flags {flags:#x} != 0xa (LE, 4K, anywhere)")
    if text_offset != 0:
        problems.append(f"text_offset {text_offset:#x}")
    if problems:
        t.fail(name, "; ".join(problems))
    else:
        t.ok(name)


def dt_report(root, triple, dtb):
    cmd = ["cargo", "run", "-q", "--features", "std", "--target", triple,
           "--bin", "dt-report", "--", dtb]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    return p.returncode, p.stdout, p.stderr


def check_dt_reports(t, root, triple):
    for fixture, facts in DT_FACTS.items():
        name = "host::dt_report::" + os.path.basename(fixture)
        code, out, err = dt_report(root, triple, os.path.join(root, fixture))
        if code != 0:
            t.fail(name, f"dt-report exited {code}: {err.strip()[-300:]}")
            continue
        try:
            got = json.loads(out)
        except ValueError as e:
            t.fail(name, f"not JSON: {e}")
            continue
        e = subset(facts, got)
        if e:
            t.fail(name, e)
        else:
            t.ok(name)
    import boardfacts
    boardfacts.run(t, root, triple, dt_report, subset)


def check_board_images(t, root):
    """make image for the real boards: files present, script valid, SD image holds them."""
    env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    for board, dtb in [("rock-5b", "rk3588-rock-5b.dtb"), ("imx95-evk", "imx95-19x19-evk.dtb")]:
        name = f"host::make_image::{board}"
        r = subprocess.run(["bash", "boards/image.sh", board], cwd=root, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            t.fail(name, f"boards/image.sh: {r.stderr.strip()[-300:]}")
            continue
        out = os.path.join(root, "build", "image", board)
        problems = []
        if open(os.path.join(out, "board.dtb"), "rb").read() != open(os.path.join(root, "tests", "dt", "boards", dtb), "rb").read():
            problems.append("board.dtb is not the board's DTB")
        cmd = open(os.path.join(out, "boot.cmd")).read()
        for want in ["smmu.enable_disabled=1", "booti ${kernel_addr_r} - ${fdt_addr_r}", "board.dtb"]:
            if want not in cmd:
                problems.append(f"boot.cmd lacks {want!r}")
        l = subprocess.run(["mkimage", "-l", os.path.join(out, "boot.scr")], capture_output=True, text=True)
        if "Script" not in l.stdout:
            problems.append("boot.scr is not a U-Boot script image")
        d = subprocess.run(["mdir", "-b", "-i", os.path.join(out, "sd.img") + "@@1M", "::/"], capture_output=True, text=True)
        for f in ["IMAGE", "BOOT.SCR", "BOARD.DTB"]:
            if f not in d.stdout.upper():
                problems.append(f"sd.img lacks {f}")
        if problems:
            t.fail(name, "; ".join(problems))
        else:
            t.ok(name)


def check_lints(t, root, triple):
    """cargo fmt and clippy -D warnings for both targets, as the style guide asks."""
    checks = [
        ("host::fmt", ["cargo", "fmt", "--check"]),
        ("host::clippy_kernel", ["cargo", "clippy", "-q", "--features", "kernel", "--bins", "--lib", "--",
                                 "-D", "warnings"]),
        ("host::clippy_host", ["cargo", "clippy", "-q", "--features", "std", "--target", triple, "--lib", "--bins",
                               "--tests", "--", "-D", "warnings"]),
    ]
    for name, cmd in checks:
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1800)
        if p.returncode == 0:
            t.ok(name)
        else:
            first = (p.stdout + p.stderr).strip().splitlines()[:6]
            t.fail(name, " | ".join(first))


def run(t, root, triple):
    print("== host checks ==", flush=True)
    check_lints(t, root, triple)
    check_image(t, root)
    check_dt_reports(t, root, triple)
    check_board_images(t, root)
