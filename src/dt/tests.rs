//! Host tests for the device-tree module against QEMU dumps and hand-written fixtures.
//! Expected values were checked by hand against `dtc -I dtb -O dts` of each blob.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use super::*;
use alloc::string::ToString;
use alloc::vec;

const QEMU_SMMUV3: &[u8] = include_bytes!("../../tests/dt/qemu-virt-smmuv3.dtb");
const QEMU_NOSMMU: &[u8] = include_bytes!("../../tests/dt/qemu-virt-nosmmu.dtb");
const QEMU_EL2: &[u8] = include_bytes!("../../tests/dt/qemu-virt-el2.dtb");
const NESTED: &[u8] = include_bytes!("../../tests/dt/smmu-nested.dtb");
const MALFORMED: &[u8] = include_bytes!("../../tests/dt/malformed.dtb");
const ROCK5B: &[u8] = include_bytes!("../../tests/dt/boards/rk3588-rock-5b.dtb");
const IMX95: &[u8] = include_bytes!("../../tests/dt/boards/imx95-19x19-evk.dtb");
const D05: &[u8] = include_bytes!("../../tests/dt/boards/hip07-d05.dtb");
const IRQ_PARENTS: &[u8] = include_bytes!("../../tests/dt/irq-parents.dtb");
const QEMU_SMMUV3_JSON: &str = include_str!("../../tests/dt/qemu-virt-smmuv3.json");
const NESTED_JSON: &str = include_str!("../../tests/dt/smmu-nested.json");

fn has_error(p: &Platform, node: &str, needle: &str) -> bool {
    p.errors.iter().any(|e| e.node == node && e.msg.contains(needle))
}

fn irq(name: &str, cells: &[u32]) -> (String, Vec<u32>) {
    (name.to_string(), cells.to_vec())
}

#[test]
fn qemu_smmuv3_smmu() {
    let p = describe(QEMU_SMMUV3).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.smmus.len(), 1);
    let s = &p.smmus[0];
    assert_eq!(s.node, "/smmuv3@9050000");
    assert_eq!(s.phandle, Some(0x8004));
    assert_eq!((s.base, s.size), (0x905_0000, 0x2_0000));
    assert!(s.enabled && s.coherent);
    assert_eq!(
        s.irqs,
        vec![
            irq("eventq", &[0, 0x4a, 1]),
            irq("priq", &[0, 0x4b, 1]),
            irq("cmdq-sync", &[0, 0x4c, 1]),
            irq("gerror", &[0, 0x4d, 1]),
        ]
    );
    // Inherited from the root's interrupt-parent.
    assert_eq!(s.interrupt_parent, Some(0x8002));
    assert_eq!(s.msi_parent, None);
    assert!(s.quirks.is_empty());
    assert_eq!(p.smmu_by_phandle(0x8004).map(|s| s.node.as_str()), Some("/smmuv3@9050000"));
    assert!(p.smmu_by_phandle(0x8002).is_none());
    assert!(p.masters.is_empty() && p.direct_maps.is_empty());
}

#[test]
fn qemu_smmuv3_pci_host() {
    let p = describe(QEMU_SMMUV3).unwrap();
    assert_eq!(p.pci_hosts.len(), 1);
    let h = &p.pci_hosts[0];
    assert_eq!(h.node, "/pcie@10000000");
    assert_eq!((h.ecam_base, h.ecam_size), (0x40_1000_0000, 0x1000_0000));
    assert_eq!(h.bus_range, (0, 255));
    assert!(h.coherent && h.enabled);
    assert_eq!(
        h.ranges,
        vec![
            PciRange { space: PciSpace::Io, prefetchable: false, pci_addr: 0, cpu_addr: 0x3eff_0000, size: 0x1_0000 },
            PciRange {
                space: PciSpace::Mem32,
                prefetchable: false,
                pci_addr: 0x1000_0000,
                cpu_addr: 0x1000_0000,
                size: 0x2eff_0000
            },
            PciRange {
                space: PciSpace::Mem64,
                prefetchable: false,
                pci_addr: 0x80_0000_0000,
                cpu_addr: 0x80_0000_0000,
                size: 0x80_0000_0000
            },
        ]
    );
    let smmu = Some("/smmuv3@9050000".to_string());
    assert_eq!(h.iommu_map, vec![IdMap { rid_base: 0, iommu_phandle: 0x8004, smmu, sid_base: 0, length: 0x1_0000 }]);
    assert_eq!(h.iommu_map_mask, None);
    let its = Some("/intc@8000000/its@8080000".to_string());
    assert_eq!(h.msi_map, vec![IdMap { rid_base: 0, iommu_phandle: 0x8003, smmu: its, sid_base: 0, length: 0x1_0000 }]);
    assert_eq!(h.rid_to_sid(0x0010), Some((0x8004, 0x10)));
    assert_eq!(h.rid_to_sid(0xffff), Some((0x8004, 0xffff)));
}

#[test]
fn qemu_smmuv3_platform() {
    let p = describe(QEMU_SMMUV3).unwrap();
    assert_eq!(p.memory, vec![Region { base: 0x4000_0000, size: 0x4000_0000 }]);
    assert!(p.reserved.is_empty());
    assert_eq!(p.chosen, Chosen { bootargs: None, stdout_path: Some("/pl011@9000000".to_string()) });
    assert_eq!(
        p.console,
        Some(Console { node: "/pl011@9000000".to_string(), kind: ConsoleKind::Pl011, base: 0x900_0000, size: 0x1000 })
    );
    let gic = p.gic.unwrap();
    assert_eq!((gic.node.as_str(), gic.version), ("/intc@8000000", 3));
    assert_eq!((gic.dist_base, gic.dist_size), (0x800_0000, 0x1_0000));
    assert_eq!(gic.redist, vec![Region { base: 0x80a_0000, size: 0xf6_0000 }]);
    assert_eq!(
        gic.its,
        vec![Its { node: "/intc@8000000/its@8080000".to_string(), base: 0x808_0000, size: 0x2_0000, phandle: 0x8003 }]
    );
    assert_eq!(p.psci, Some(Psci { method: PsciMethod::Hvc }));
}

#[test]
fn qemu_nosmmu_and_el2() {
    let p = describe(QEMU_NOSMMU).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p.smmus.is_empty());
    let h = &p.pci_hosts[0];
    assert!(h.iommu_map.is_empty());
    assert_eq!(h.rid_to_sid(0), None);
    assert_eq!(h.msi_map.len(), 1);

    let p = describe(QEMU_EL2).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.psci, Some(Psci { method: PsciMethod::Smc }));
    assert_eq!(p.smmus.len(), 1);
}

#[test]
fn qemu_report_matches_golden() {
    let p = describe(QEMU_SMMUV3).unwrap();
    assert_eq!(report_json(&p), QEMU_SMMUV3_JSON);
}

#[test]
fn nested_smmu_translated_through_two_buses() {
    let p = describe(NESTED).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.smmus.len(), 2);
    let s = &p.smmus[0];
    assert_eq!(s.node, "/soc@0/bus@2000000/iommu@500000");
    // 0x50_0000 on the inner bus -> 0x250_0000 on soc@0 -> 0x4250_0000 on the CPU.
    assert_eq!((s.base, s.size), (0x4250_0000, 0x10_0000));
    assert!(s.enabled && s.coherent);
    assert_eq!(s.irqs, vec![irq("gerror", &[0, 325, 4]), irq("eventq", &[0, 328, 4])]);
    let gic_ph = describe(NESTED).unwrap().pci_hosts[0].msi_map[0].iommu_phandle;
    assert_eq!(s.msi_parent, Some(gic_ph));
    assert_eq!(s.quirks, vec!["hisilicon,broken-prefetch-cmd".to_string(), "acme,foo-broken-bar".to_string()]);
    assert!(s.interrupt_parent.is_some());

    let s2 = &p.smmus[1];
    assert_eq!(s2.node, "/soc@0/iommu@4000000");
    assert_eq!(s2.base, 0x4400_0000);
    assert!(!s2.enabled && !s2.coherent);
    assert_eq!(s2.irqs, vec![irq("irq0", &[0, 200, 1]), irq("irq1", &[0, 201, 1])]);
    assert_eq!(s2.interrupt_parent, s.interrupt_parent);
    assert_eq!(s2.quirks, vec!["cavium,cn9900-broken-page1-regspace".to_string()]);
}

#[test]
fn nested_masters_skip_other_iommus() {
    let p = describe(NESTED).unwrap();
    let smmu = "/soc@0/bus@2000000/iommu@500000".to_string();
    assert_eq!(
        p.masters,
        vec![
            Master {
                node: "/soc@0/bus@2000000/display@600000".to_string(),
                smmu: smmu.clone(),
                stream_ids: vec![0x20, 0x21, 0x22],
                enabled: true
            },
            Master { node: "/soc@0/npu@3900000".to_string(), smmu, stream_ids: vec![0x50], enabled: true },
            Master {
                node: "/soc@0/usb@3a00000".to_string(),
                smmu: "/soc@0/iommu@4000000".to_string(),
                stream_ids: vec![0x30],
                enabled: false
            },
        ]
    );
    assert!(!p.masters.iter().any(|m| m.node.contains("gpu")));
}

#[test]
fn nested_pci_iommu_map_with_mask() {
    let p = describe(NESTED).unwrap();
    let h = &p.pci_hosts[0];
    assert_eq!(h.node, "/soc@0/pcie@10000000");
    assert_eq!((h.ecam_base, h.ecam_size), (0x5000_0000, 0x1000_0000));
    assert_eq!(h.bus_range, (0, 0x7f));
    assert_eq!(h.iommu_map_mask, Some(0xfff8));
    assert_eq!(h.iommu_map.len(), 3);
    assert_eq!(h.iommu_map[2].smmu, None, "mmu-500 target is not an SMMUv3");
    let smmu_ph = p.smmus[0].phandle.unwrap();
    // Function bits are masked off: 00:00.7 -> RID 0 -> SID 0x1000.
    assert_eq!(h.rid_to_sid(0x0007), Some((smmu_ph, 0x1000)));
    assert_eq!(h.rid_to_sid(0x0010), Some((smmu_ph, 0x1010)));
    assert_eq!(h.rid_to_sid(0x0105), Some((smmu_ph, 0x2000)));
    assert_eq!(h.rid_to_sid(0x01ff), Some((smmu_ph, 0x20f8)));
    assert_eq!(h.rid_to_sid(0x0300), None);
    let mmu500_ph = h.iommu_map[2].iommu_phandle;
    assert_eq!(h.rid_to_sid(0x0208), Some((mmu500_ph, 0x8)));
    assert!(p.smmu_by_phandle(mmu500_ph).is_none());
    assert_eq!(
        h.ranges,
        vec![
            PciRange { space: PciSpace::Io, prefetchable: false, pci_addr: 0, cpu_addr: 0x7f00_0000, size: 0x1_0000 },
            PciRange {
                space: PciSpace::Mem32,
                prefetchable: false,
                pci_addr: 0x2000_0000,
                cpu_addr: 0x6000_0000,
                size: 0x1000_0000
            },
            PciRange {
                space: PciSpace::Mem64,
                prefetchable: true,
                pci_addr: 0x1_0000_0000,
                cpu_addr: 0x7000_0000,
                size: 0x800_0000
            },
        ]
    );
    assert_eq!(h.msi_map[0].smmu.as_deref(), Some("/interrupt-controller@48000000/msi-controller@48040000"));
}

#[test]
fn nested_memory_reserved_console() {
    let p = describe(NESTED).unwrap();
    assert_eq!(
        p.memory,
        vec![Region { base: 0x8000_0000, size: 0x8000_0000 }, Region { base: 0x8_8000_0000, size: 0x4000_0000 }]
    );
    assert_eq!(
        p.reserved,
        vec![
            Reserved { node: "/memreserve/".to_string(), base: 0x8800_0000, size: 0x1_0000, no_map: false },
            Reserved {
                node: "/reserved-memory/tfa@90000000".to_string(),
                base: 0x9000_0000,
                size: 0x10_0000,
                no_map: true
            },
            Reserved {
                node: "/reserved-memory/framebuffer@a0000000".to_string(),
                base: 0xa000_0000,
                size: 0x80_0000,
                no_map: false
            },
        ]
    );
    assert_eq!(p.chosen.bootargs.as_deref(), Some("console=ttyLP2 earlycon"));
    assert_eq!(p.chosen.stdout_path.as_deref(), Some("serial2:115200n8"));
    assert_eq!(
        p.console,
        Some(Console {
            node: "/soc@0/bus@2000000/serial@570000".to_string(),
            kind: ConsoleKind::ImxLpuart,
            base: 0x4257_0000,
            size: 0x1_0000
        })
    );
    assert_eq!(p.psci, Some(Psci { method: PsciMethod::Smc }));
    let gic = p.gic.unwrap();
    assert_eq!(gic.redist, vec![Region { base: 0x4806_0000, size: 0x20_0000 }]);
    assert_eq!(gic.its.len(), 1);
}

#[test]
fn nested_direct_maps_use_device_bus_cells() {
    let p = describe(NESTED).unwrap();
    let node = "/reserved-memory/framebuffer@a0000000".to_string();
    let master = "/soc@0/bus@2000000/display@600000".to_string();
    assert_eq!(
        p.direct_maps,
        vec![
            DirectMap { node: node.clone(), master: master.clone(), iova: 0xa000_0000, size: 0x80_0000 },
            DirectMap { node, master, iova: 0x1000_0000, size: 0x1000 },
        ]
    );
}

#[test]
fn nested_report_matches_golden() {
    assert_eq!(report_json(&describe(NESTED).unwrap()), NESTED_JSON);
}

#[test]
fn malformed_nodes_become_errors() {
    let p = describe(MALFORMED).unwrap();
    assert!(has_error(&p, "/iommu@1000000", "`reg` length 12"));
    assert!(has_error(&p, "/iommu@2000000", "chain loops"));
    assert!(has_error(&p, "/dangling@4000000", "unknown phandle 0xdead"));
    assert!(has_error(&p, "/wide-bus/iommu@0", "absurd `#address-cells` = 7"));
    assert!(has_error(&p, "/no-ranges-bus/iommu@7000000", "no `ranges`"));
    assert!(has_error(&p, "/zero-master@6000000", "no StreamID"));
    assert!(has_error(&p, "/pcie@40000000", "`iommu-map` has invalid length 20"));
    assert!(has_error(&p, "/pcie@40000000", "bus-range"));
    assert!(has_error(&p, "/psci", "\"svc\""));
    assert_eq!(p.errors.len(), 9, "{:#?}", p.errors);
}

#[test]
fn malformed_healthy_nodes_still_described() {
    let p = describe(MALFORMED).unwrap();
    let nodes: Vec<&str> = p.smmus.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(nodes, ["/iommu@2000000", "/iommu@3000000"]);
    assert!(p.smmus[0].irqs.is_empty());
    assert_eq!(p.masters.len(), 2);
    assert_eq!(p.masters[0].node, "/ok-master@5000000");
    assert_eq!(p.masters[0].stream_ids, vec![7]);
    assert!(p.masters[1].stream_ids.is_empty());
    let gic = p.gic.clone().unwrap();
    assert_eq!((gic.version, gic.dist_base), (2, 0x800_0000));
    assert!(gic.redist.is_empty() && gic.its.is_empty());
    // No stdout-path: first enabled PL011.
    assert_eq!(p.console.clone().map(|c| (c.node, c.kind)), Some(("/uart@9000000".to_string(), ConsoleKind::Pl011)));
    assert_eq!(p.psci, None);
    let h = &p.pci_hosts[0];
    assert_eq!(h.bus_range, (0, 255));
    assert!(h.iommu_map.is_empty());
    // The JSON writer copes with whatever errors say.
    assert!(report_json(&p).contains("\\\"svc\\\""));
}

#[test]
fn rid_to_sid_follows_of_map_id() {
    let mut h = PciHost {
        node: "/pcie".to_string(),
        ecam_base: 0,
        ecam_size: 0,
        bus_range: (0, 255),
        ranges: Vec::new(),
        iommu_map: vec![
            IdMap { rid_base: 0x10, iommu_phandle: 1, smmu: None, sid_base: 0x100, length: 0x10 },
            IdMap { rid_base: 0x18, iommu_phandle: 2, smmu: None, sid_base: 0x900, length: 0x8 },
            IdMap { rid_base: 0xfff0, iommu_phandle: 3, smmu: None, sid_base: 0xffff_fff0, length: u32::MAX },
        ],
        iommu_map_mask: None,
        msi_map: Vec::new(),
        msi_parent: None,
        coherent: false,
        enabled: true,
        devices: Vec::new(),
    };
    assert_eq!(h.rid_to_sid(0x0f), None);
    assert_eq!(h.rid_to_sid(0x10), Some((1, 0x100)));
    // First match wins even when a later entry overlaps.
    assert_eq!(h.rid_to_sid(0x18), Some((1, 0x108)));
    assert_eq!(h.rid_to_sid(0x20), None);
    // rid_base + length overflows u32 and sid arithmetic wraps like the C code.
    assert_eq!(h.rid_to_sid(0xffff), Some((3, 0xffff_ffff)));
    h.iommu_map_mask = Some(0xff);
    // Entries are checked in order, so a match before the bad entry still succeeds...
    assert_eq!(h.rid_to_sid(0x0110), Some((1, 0x100)));
    // ...but reaching rid_base 0xfff0, which has bits outside the mask, fails the lookup.
    assert_eq!(h.rid_to_sid(0x0130), None);
    h.iommu_map.pop();
    assert_eq!(h.rid_to_sid(0x0130), None);
}

#[test]
fn bad_blobs_are_errors() {
    assert_eq!(describe(&[]), Err(DtError::Truncated));
    assert_eq!(describe(&[0u8; 64]), Err(DtError::BadMagic));
    assert_eq!(describe(b"hello\n"), Err(DtError::BadMagic));
    assert_eq!(describe(&QEMU_SMMUV3[..8]), Err(DtError::Truncated));
    assert_eq!(describe(&QEMU_SMMUV3[..QEMU_SMMUV3.len() - 1]), Err(DtError::Truncated));
    // Every prefix of a real blob: an error, never a panic.
    for len in 0..QEMU_SMMUV3.len() {
        assert!(describe(&QEMU_SMMUV3[..len]).is_err(), "prefix {len}");
    }
    let mut garbage = [0u8; 512];
    let mut rng = XorShift(0x1234_5678_9abc_def0);
    for b in garbage.iter_mut() {
        *b = rng.next() as u8;
    }
    assert!(describe(&garbage).is_err());
    // Valid magic and sizes but nonsense inside.
    let mut g = garbage;
    g[..4].copy_from_slice(&0xd00d_feedu32.to_be_bytes());
    g[4..8].copy_from_slice(&512u32.to_be_bytes());
    assert!(describe(&g).is_err());
    assert_eq!(DtError::Truncated.to_string(), "device tree blob is truncated");
}

#[test]
fn bad_structure_is_typed() {
    let mut blob = QEMU_SMMUV3.to_vec();
    let off_struct = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
    // First token after the root's FDT_BEGIN_NODE + empty name: make it unknown.
    blob[off_struct + 8..off_struct + 12].copy_from_slice(&0x77u32.to_be_bytes());
    assert!(matches!(describe(&blob), Err(DtError::BadStructure(_, "unknown token"))));
    let mut blob = QEMU_SMMUV3.to_vec();
    blob[20..24].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(describe(&blob), Err(DtError::UnsupportedVersion(1)));
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Mutates 1-8 random bytes of the fixtures `iterations` times; returns how many
/// mutated blobs still described successfully.
fn mutate_and_describe(iterations: usize, seed: u64) -> usize {
    // QEMU's and real boards' DTBs (4-cell GIC, mbigen, nested buses), plus our own.
    let fixtures: [&[u8]; 8] = [QEMU_SMMUV3, NESTED, MALFORMED, QEMU_EL2, ROCK5B, IMX95, D05, IRQ_PARENTS];
    let mut rng = XorShift(seed);
    let mut ok = 0;
    for i in 0..iterations {
        let mut blob = fixtures[i % fixtures.len()].to_vec();
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            // A quarter of the hits go to the 40-byte header, which is where offsets live.
            let pos = if rng.next().is_multiple_of(4) { rng.next() % 40 } else { rng.next() % blob.len() as u64 };
            let val = rng.next() as u8;
            blob[pos as usize] = if rng.next().is_multiple_of(2) { val } else { blob[pos as usize] ^ (1 << (val % 8)) };
        }
        if let Ok(p) = describe(&blob) {
            ok += 1;
            let _ = report_json(&p);
        }
    }
    ok
}

/// Random mutations: describe may fail, but must never panic, and whatever it
/// returns must be reportable.
#[test]
fn mutated_fixtures_never_panic() {
    let ok = mutate_and_describe(3500, 0x9e37_79b9_7f4a_7c15);
    // Most corruptions of a property value only hurt one node, so many blobs still parse.
    assert!(ok > 350, "only {ok} mutated blobs parsed");
}

/// The same with many more iterations: `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn mutated_fixtures_never_panic_long() {
    for seed in 1..=50u64 {
        mutate_and_describe(10_000, seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    }
}

#[test]
fn find_path_matches_unit_address_less_names() {
    let t = tree::Tree::parse(QEMU_SMMUV3).unwrap();
    assert_eq!(t.find_path("/"), Some(0));
    let n = t.find_path("/intc/its").unwrap();
    assert_eq!(t.path(n), "/intc@8000000/its@8080000");
    assert_eq!(t.find_path("/intc@8000001"), None);
    assert_eq!(t.find_path("intc"), None);
}

/// QEMU's own DTB with a `reserved-memory` window whose `iommu-addresses` names a
/// PCI device node (the runner's virt-directmap boot builds it the same way).
#[test]
fn pci_device_node_and_direct_map() {
    let p = describe(include_bytes!("../../tests/dt/qemu-virt-directmap.dtb")).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let node = p.pci_device_node(0, 0x08).expect("edu@1,0 node");
    assert_eq!(node, "/pcie@10000000/edu@1,0");
    assert_eq!(p.direct_maps_for(node), vec![(0x7000_0000, 0x10_0000)]);
    assert_eq!(p.pci_device_node(0, 0x10), None);
    let r = p.reserved.iter().find(|r| r.base == 0x7000_0000).expect("window reserved");
    assert!(r.no_map && r.size == 0x10_0000);
}

#[test]
fn cpus_by_mpidr() {
    let p = describe(include_bytes!("../../tests/dt/qemu-virt-smmuv3.dtb")).unwrap();
    assert_eq!(p.cpus, vec![0]);
    // HiSilicon D05: 64 Cortex-A72 in clusters of 4 (Aff1) across 4 dies (Aff2).
    let d05 = describe(include_bytes!("../../tests/dt/boards/hip07-d05.dtb")).unwrap();
    assert_eq!(d05.cpus.len(), 64);
    assert_eq!(d05.cpus[0], 0x10000);
    assert_eq!(d05.cpus[4], 0x10100);
}

/// Structured damage to a real board DTB: truncation at every 997th byte, the
/// header's size fields set absurdly, the struct block cut short. Errors, no panic.
#[test]
fn real_dtbs_truncated_and_absurd() {
    for blob in [ROCK5B, IMX95, D05] {
        for cut in (0..blob.len()).step_by(997) {
            let _ = describe(&blob[..cut]);
        }
        for field in [4usize, 8, 12, 16, 32, 36] {
            let mut b = blob.to_vec();
            b[field..field + 4].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
            assert!(describe(&b).is_err() || field >= 32, "absurd header field at {field} accepted");
        }
    }
}

#[test]
fn gic_phandle_and_smmu_line_parents() {
    // QEMU: every SMMU line inherits the root's interrupt-parent, the GIC (0x8002).
    let p = describe(QEMU_SMMUV3).unwrap();
    let gic = p.gic.as_ref().unwrap();
    assert_eq!(gic.phandle, Some(0x8002));
    assert_eq!(p.smmus[0].irq_parents, vec![Some(0x8002); 4]);
    assert!(p.smmus[0].irq_parents.iter().all(|&ph| gic.is_parent(ph)));
    assert_eq!((p.smmus[0].msi_parent, p.smmus[0].msi_device_id), (None, None));
    // HiSilicon D05: the enabled SMMUs sit behind an mbigen, not the GIC.
    let p = describe(D05).unwrap();
    let gic = p.gic.as_ref().unwrap();
    assert!(gic.phandle.is_some());
    let wired: Vec<&Smmu> = p.smmus.iter().filter(|s| !s.irqs.is_empty()).collect();
    assert!(!wired.is_empty());
    for s in wired {
        assert_eq!(s.irq_parents.len(), s.irqs.len(), "{}", s.node);
        assert!(s.irq_parents.iter().all(|&ph| ph.is_some() && !gic.is_parent(ph)), "{}: {:?}", s.node, s.irq_parents);
    }
}

#[test]
fn crafted_interrupt_parents() {
    let p = describe(IRQ_PARENTS).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let gic = p.gic.as_ref().unwrap();
    let gic_ph = gic.phandle.unwrap();
    let by = |node: &str| p.smmus.iter().find(|s| s.node == node).unwrap();
    let on_gic = |s: &Smmu| s.irq_parents.iter().map(|&ph| gic.is_parent(ph)).collect::<Vec<_>>();

    // 1. Inherited from the root: the GIC.
    let s = by("/iommu@1000000");
    assert_eq!(s.irqs, vec![irq("eventq", &[0, 74, 1]), irq("gerror", &[0, 77, 1])]);
    assert_eq!(s.irq_parents, vec![Some(gic_ph); 2]);
    // 2. Its own interrupt-parent, the 2-cell mbigen; msi-parent with a DeviceID.
    let s = by("/iommu@2000000");
    assert_eq!(s.irqs, vec![irq("eventq", &[0x2dd, 1]), irq("gerror", &[0x2de, 1])]);
    assert_eq!(on_gic(s), [false, false]);
    assert_eq!(s.msi_device_id, Some(0x40000));
    assert_eq!(s.msi_parent, gic.its.first().map(|i| i.phandle));
    // 3. Inherited from its bus: the sysirq, although its cells read like a GIC SPI.
    let s = by("/bus@3000000/iommu@0");
    assert_eq!(s.irqs, vec![irq("combined", &[0, 80, 1])]);
    assert_eq!(on_gic(s), [false]);
    assert!(s.irq_parents[0].is_some() && s.irq_parents[0] == s.interrupt_parent);
    // 4. interrupts-extended: one line each; `interrupt_parent` is only the first's.
    let s = by("/iommu@4000000");
    assert_eq!(s.irqs, vec![irq("eventq", &[0, 90, 1]), irq("gerror", &[0, 91, 4])]);
    assert_eq!(on_gic(s), [true, false]);
    assert_eq!(s.interrupt_parent, Some(gic_ph));
    // 5. Combined to the GIC.
    let s = by("/iommu@5000000");
    assert_eq!(on_gic(s), [true]);
    assert_eq!(s.msi_device_id, Some(0x50000));
    // An unknown controller is never the GIC, not even a GIC without a phandle.
    assert!(!gic.is_parent(None));
    let mut anon = gic.clone();
    anon.phandle = None;
    assert!(!anon.is_parent(None));
}
