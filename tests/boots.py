"""The matrix of QEMU boots `make test` runs. Each boot's in-kernel tests are
counted one by one; `expect.*` boot arguments tell the kernel what to check."""

BOOTS = [
    {
        "name": "virt",
        "what": "-kernel, EL1, SMMUv3 + edu",
        "bootargs": ["expect.el=1", "expect.smmus=1"],
    },
    {
        "name": "virt-el2",
        "what": "-kernel, entered at EL2 (virtualization=on)",
        "replace": {"virt,iommu=smmuv3,gic-version=3": "virt,iommu=smmuv3,gic-version=3,virtualization=on"},
        "bootargs": ["expect.el=2", "expect.smmus=1"],
    },
    {
        "name": "virt-nosmmu",
        "what": "-kernel, no IOMMU (the 'disabled in firmware' case)",
        "replace": {"virt,iommu=smmuv3,gic-version=3": "virt,gic-version=3"},
        "bootargs": ["expect.el=1", "expect.smmus=0"],
    },
    {
        "name": "uboot",
        "what": "U-Boot booti at 0x40400000, as on a real board",
        "uboot": True,
        "load": "0x40400000",
        "bootargs": ["expect.el=1", "expect.load=0x40400000", "expect.smmus=1"],
        "timeout": 180,
    },
    {
        "name": "uboot-high",
        "what": "U-Boot booti at 0x5a000000: no fixed load address",
        "uboot": True,
        "load": "0x5a000000",
        "bootargs": ["expect.el=1", "expect.load=0x5a000000", "expect.smmus=1"],
        "timeout": 180,
    },
]
