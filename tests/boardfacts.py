"""dt-report on real boards' DTBs (from Debian's linux-image-6.12 arm64 package,
copied to tests/dt/boards/). Every fact below was checked by hand against
`dtc -I dtb -O dts`: the node paths, the reg after the parents' ranges, the
interrupt specifiers (whose cell count comes from the interrupt parent), the
status, dma-coherent, quirks and the masters' StreamIDs."""
import json
import os

BOARD_FACTS = {
    # RK3588: two SMMUv3 (PCIe), disabled in the shipped DT, not dma-coherent, GIC
    # with 4 interrupt cells, interrupt-names not in the eventq/priq/cmdq/gerror order.
    "rk3588-rock-5b.dtb": {
        "smmus": [
            {"node": "/iommu@fc900000", "base": "0xfc900000", "size": "0x200000",
             "enabled": False, "coherent": False, "quirks": [],
             "irqs": {"eventq": ["0x0", "0x171", "0x1", "0x0"], "gerror": ["0x0", "0x173", "0x1", "0x0"],
                      "priq": ["0x0", "0x176", "0x1", "0x0"], "cmdq-sync": ["0x0", "0x16f", "0x1", "0x0"]}},
            {"node": "/iommu@fcb00000", "base": "0xfcb00000", "size": "0x200000",
             "enabled": False, "coherent": False},
        ],
        "masters": [],
    },
    # i.MX95 EVK: the SMMU sits in /soc/bus@49000000 (1 address cell, its own
    # ranges) under /soc (2 cells); disabled; no priq-first ordering.
    "imx95-19x19-evk.dtb": {
        "smmus": [
            {"node": "/soc/bus@49000000/iommu@490d0000", "base": "0x490d0000", "size": "0x100000",
             "enabled": False, "coherent": False,
             "irqs": {"eventq": ["0x0", "0x145", "0x1"], "gerror": ["0x0", "0x148", "0x1"],
                      "priq": ["0x0", "0x14e", "0x1"], "cmdq-sync": ["0x0", "0x146", "0x1"]}},
        ],
    },
    # HiSilicon D05: five SMMUv3, the first disabled without interrupts, the others
    # behind mbigen interrupt controllers (2 cells), no cmdq-sync, the
    # broken-prefetch quirk, and platform masters with `iommus`.
    "hip07-d05.dtb": {
        "smmus": [
            {"node": "/iommu@a0040000", "base": "0xa0040000", "enabled": False, "coherent": True,
             "quirks": ["hisilicon,broken-prefetch-cmd"], "irqs": {}},
            {"node": "/iommu@d0040000", "base": "0xd0040000", "size": "0x20000", "enabled": True,
             "coherent": True, "quirks": ["hisilicon,broken-prefetch-cmd"],
             "irqs": {"eventq": ["0x2dd", "0x1"], "gerror": ["0x2de", "0x1"], "priq": ["0x2df", "0x1"]}},
            {"node": "/iommu@8d0040000", "base": "0x8d0040000"},
            {"node": "/iommu@400d0040000", "base": "0x400d0040000"},
            {"node": "/iommu@408d0040000", "base": "0x408d0040000"},
        ],
        "masters": [
            {"node": "/soc/crypto@d0000000", "smmu": "/iommu@d0040000", "stream_ids": ["0x600"]},
            {"node": "/soc/crypto@8d0000000", "smmu": "/iommu@8d0040000", "stream_ids": ["0x600"]},
            {"node": "/soc/crypto@400d0000000", "smmu": "/iommu@400d0040000", "stream_ids": ["0x600"]},
            {"node": "/soc/crypto@408d0000000", "smmu": "/iommu@408d0040000", "stream_ids": ["0x600"]},
        ],
    },
    # Arm FVP Base RevC: SMMU with msi-parent (ITS), PCI host with iommu-map.
    "fvp-base-revc.dtb": {
        "smmus": [
            {"node": "/iommu@2b400000", "base": "0x2b400000", "size": "0x100000", "enabled": True,
             "coherent": True,
             "irqs": {"eventq": ["0x0", "0x4a", "0x1"], "gerror": ["0x0", "0x4f", "0x1"],
                      "priq": ["0x0", "0x4b", "0x1"], "cmdq-sync": ["0x0", "0x4d", "0x1"]}},
        ],
        "pci_hosts": [
            {"node": "/pci@40000000", "ecam_base": "0x40000000", "ecam_size": "0x10000000",
             "bus_range": ["0x0", "0x1"],
             "iommu_map": [{"rid_base": "0x0", "smmu": "/iommu@2b400000", "sid_base": "0x0",
                            "length": "0x10000"}]},
        ],
    },
}


def run(t, root, triple, dt_report, subset):
    base = os.path.join(root, "tests", "dt", "boards")
    for rel, facts in BOARD_FACTS.items():
        name = "host::dt_report::" + rel
        path = os.path.join(base, rel)
        if not os.path.exists(path):
            t.fail(name, f"{path} missing")
            continue
        code, out, err = dt_report(root, triple, path)
        if code != 0:
            t.fail(name, f"dt-report exited {code}: {err.strip()[-300:]}")
            continue
        e = subset(facts, json.loads(out))
        if e:
            t.fail(name, e)
        else:
            t.ok(name)
