"""Device-tree facts a boot needs that QEMU's generated DT lacks. The runner dumps the
DTB QEMU builds for the boot's machine, edits it with fdtget/fdtput (device-tree-compiler)
and boots with -dtb, as firmware that knows the platform would hand it over.

A boot asks with a "dtb" dict:
  "iommu_bypass_buses": [[lo, hi], ...]  PCI buses whose host bridge has bypass_iommu=on
      (pxb-pcie,bus_nr=lo,...). QEMU's ACPI IORT leaves their RIDs out of the SMMU's ID
      mappings, its DT iommu-map does not; this removes RIDs lo<<8 .. (hi+1)<<8-1 from
      every PCI host's iommu-map, so the kernel sees those devices as not behind an SMMU.
"""
import os
import shutil
import subprocess


def _fdt(*args):
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def _pci_hosts(dtb):
    hosts = []
    for name in _fdt("fdtget", "-l", dtb, "/").split():
        path = "/" + name
        try:
            compat = _fdt("fdtget", dtb, path, "compatible")
        except subprocess.CalledProcessError:
            continue
        if "pci-host-ecam-generic" in compat:
            hosts.append(path)
    return hosts


def iommu_map_without(cells, lo_rid, end_rid):
    """iommu-map cells (rid-base, phandle, sid-base, length)* minus RIDs [lo_rid, end_rid)."""
    out = []
    for i in range(0, len(cells) - len(cells) % 4, 4):
        base, ph, sid, length = cells[i:i + 4]
        for s, e in ((base, min(base + length, lo_rid)), (max(base, end_rid), base + length)):
            if e > s:
                out += [s, ph, sid + (s - base), e - s]
    return out


def exclude_buses(dtb, lo, hi):
    for host in _pci_hosts(dtb):
        try:
            cells = [int(x) for x in _fdt("fdtget", "-t", "u", dtb, host, "iommu-map").split()]
        except subprocess.CalledProcessError:
            continue
        new = iommu_map_without(cells, lo << 8, (hi + 1) << 8)
        if new:
            _fdt("fdtput", "-t", "u", dtb, host, "iommu-map", *[str(c) for c in new])
        else:
            _fdt("fdtput", "-d", dtb, host, "iommu-map")


def _without_drives(argv):
    """The DT does not depend on block devices; leave them (and their image files) out."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a == "-drive" or (a == "-device" and "drive=" in nxt):
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def build(argv, spec, out_dir, name):
    """Dump QEMU's DTB for `argv` (no -kernel yet), apply `spec`, return the file's path."""
    os.makedirs(out_dir, exist_ok=True)
    raw = os.path.join(out_dir, f"{name}.qemu.dtb")
    out = os.path.join(out_dir, f"{name}.dtb")
    subprocess.run(_without_drives(argv) + ["-machine", "dumpdtb=" + raw], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    shutil.copyfile(raw, out)
    for lo, hi in spec.get("iommu_bypass_buses", []):
        exclude_buses(out, lo, hi)
    return out


if __name__ == "__main__":
    # Self-check of the interval arithmetic.
    assert iommu_map_without([0, 7, 0, 0x10000], 0xc000, 0x10000) == [0, 7, 0, 0xc000]
    assert iommu_map_without([0, 7, 0, 0x10000], 0x4000, 0x8000) == [0, 7, 0, 0x4000, 0x8000, 7, 0x8000, 0x8000]
    assert iommu_map_without([0, 7, 0x100, 0x100], 0, 0x10000) == []
    print("ok")
