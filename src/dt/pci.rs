//! PCI host bridges: ECAM window, `ranges` windows, and the RID -> StreamID maps
//! (`iommu-map`, `msi-map`; bindings pci/pci-iommu.txt, pci/pci-msi.txt).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::addr::{number, slice};
use super::iommu::SMMU_V3;
use super::{Ctx, IdMap, PciDeviceNode, PciHost, PciRange, PciSpace, Problem};

/// phys.hi of a PCI address: space code in bits 24-25, prefetchable in bit 30.
const SPACE_SHIFT: u32 = 24;
const PREFETCHABLE: u32 = 1 << 30;

impl PciHost {
    /// Requester ID -> (IOMMU phandle, StreamID), Linux `of_map_id` semantics: mask the
    /// RID with `iommu-map-mask`, take the first entry with rid_base <= rid < rid_base +
    /// length, SID = rid - rid_base + sid_base. `None` when no entry matches (Linux then
    /// leaves the device untranslated) or an entry's rid_base has bits outside the mask
    /// (Linux fails the lookup with -EFAULT).
    pub fn rid_to_sid(&self, rid: u16) -> Option<(u32, u32)> {
        let mask = self.iommu_map_mask.unwrap_or(u32::MAX);
        let id = u32::from(rid) & mask;
        for m in &self.iommu_map {
            if m.rid_base & !mask != 0 {
                return None;
            }
            let end = u64::from(m.rid_base).saturating_add(u64::from(m.length));
            if id < m.rid_base || u64::from(id) >= end {
                continue;
            }
            return Some((m.iommu_phandle, id.wrapping_sub(m.rid_base).wrapping_add(m.sid_base)));
        }
        None
    }
}

impl Ctx<'_, '_> {
    fn is_pci(&self, n: usize) -> bool {
        self.t.str_prop(n, "device_type") == Some("pci")
    }

    /// `pci-host-ecam-generic` nodes and other `device_type = "pci"` nodes with `reg`
    /// that are host bridges (parent is not itself a PCI bus, which would make them
    /// PCI-PCI bridges).
    pub(crate) fn pci_hosts(&mut self) -> Vec<PciHost> {
        let t = self.t;
        let mut out = Vec::new();
        for n in t.indices() {
            let host = t.is_compatible(n, "pci-host-ecam-generic") || (self.is_pci(n) && t.has(n, "reg"));
            if !host || t.parent(n).is_some_and(|p| self.is_pci(p)) {
                continue;
            }
            if let Some(h) = self.pci_host(n) {
                out.push(h);
            }
        }
        out
    }

    fn pci_host(&mut self, n: usize) -> Option<PciHost> {
        let t = self.t;
        let regs = self.ok(n, t.reg(n))?;
        // Non-ECAM hosts (DesignWare & co.) carry several windows; the config one is named.
        let names = t.strings(n, "reg-names");
        let idx = names.iter().position(|s| matches!(*s, "ecam" | "config" | "cfg")).unwrap_or(0);
        let &(ecam_base, ecam_size) = regs.get(idx).or(regs.first())?;
        let bus_range = self.bus_range(n);
        let ranges = self.pci_ranges(n);
        let iommu_map_mask = self.ok(n, t.u32_prop(n, "iommu-map-mask")).flatten();
        let iommu_map = self.id_map(n, "iommu-map", true);
        let mask = iommu_map_mask.unwrap_or(u32::MAX);
        for m in &iommu_map {
            if m.rid_base & !mask != 0 {
                self.err(n, Problem::MapMask { rid_base: m.rid_base, mask });
            }
        }
        let msi_map = self.id_map(n, "msi-map", false);
        let msi_parent = self.msi_parent(n);
        let mut devices = Vec::new();
        self.pci_devices(n, &mut devices, 0);
        Some(PciHost {
            node: t.path(n).to_string(),
            ecam_base,
            ecam_size,
            bus_range,
            ranges,
            iommu_map,
            iommu_map_mask,
            msi_map,
            msi_parent,
            coherent: t.is_coherent(n),
            enabled: t.is_enabled(n),
            devices,
        })
    }

    /// Child nodes of a PCI bus: `reg` phys.hi carries bus[23:16] dev[15:11] fn[10:8].
    fn pci_devices(&mut self, n: usize, out: &mut Vec<PciDeviceNode>, depth: usize) {
        let t = self.t;
        if depth > 8 {
            return;
        }
        for &c in t.children(n) {
            let Some(cells) = self.ok(c, t.cells_prop(c, "reg")).flatten() else { continue };
            let Some(&hi) = cells.first() else { continue };
            out.push(PciDeviceNode { node: t.path(c).to_string(), rid: ((hi >> 8) & 0xffff) as u16 });
            self.pci_devices(c, out, depth.saturating_add(1));
        }
    }

    fn bus_range(&mut self, n: usize) -> (u8, u8) {
        let t = self.t;
        let Some(c) = self.ok(n, t.cells_prop(n, "bus-range")).flatten() else {
            return (0, 255);
        };
        let parsed = match c.as_slice() {
            [lo, hi] => u8::try_from(*lo).ok().zip(u8::try_from(*hi).ok()).filter(|(l, h)| l <= h),
            _ => None,
        };
        parsed.unwrap_or_else(|| {
            let cells: Vec<String> = c.iter().map(|v| alloc::format!("{v:#x}")).collect();
            let value = alloc::format!("<{}>", cells.join(" "));
            self.err(n, Problem::BadValue { prop: "bus-range", value });
            (0, 255)
        })
    }

    /// Host `ranges`: (3-cell PCI address, CPU address in the parent's cells, size in the
    /// host's #size-cells). The CPU side is translated further up like any `reg`.
    fn pci_ranges(&mut self, n: usize) -> Vec<PciRange> {
        let t = self.t;
        let mut out = Vec::new();
        let Some(raw) = self.ok(n, t.cells_prop(n, "ranges")).flatten() else {
            return out;
        };
        let Some(parent) = t.parent(n) else {
            return out;
        };
        let (Some(na), Some(pna), Some(ns)) =
            (self.ok(n, t.addr_cells(n)), self.ok(n, t.addr_cells(parent)), self.ok(n, t.size_cells(n)))
        else {
            return out;
        };
        if na != 3 {
            self.err(n, Problem::BadValue { prop: "#address-cells", value: na.to_string() });
            return out;
        }
        let (pna, ns) = (pna as usize, ns as usize);
        let entry = 3usize.saturating_add(pna).saturating_add(ns);
        if !raw.len().is_multiple_of(entry) {
            self.err(n, Problem::BadLength { prop: "ranges", len: raw.len().saturating_mul(4) });
            return out;
        }
        for e in raw.chunks_exact(entry) {
            let hi = e.first().copied().unwrap_or(0);
            let space = match (hi >> SPACE_SHIFT) & 3 {
                1 => PciSpace::Io,
                2 => PciSpace::Mem32,
                3 => PciSpace::Mem64,
                _ => continue, // configuration space windows are not host ranges
            };
            let pci_addr = number(slice(e, 1, 2).unwrap_or(&[])) as u64;
            let cpu = number(slice(e, 3, pna).unwrap_or(&[]));
            let size = number(slice(e, 3usize.saturating_add(pna), ns).unwrap_or(&[]));
            let Some(size) = self.ok(n, u64::try_from(size).map_err(|_| Problem::AddressTooWide(size))) else {
                continue;
            };
            let Some(cpu_addr) = self.ok(n, t.translate(parent, cpu)) else {
                continue;
            };
            out.push(PciRange { space, prefetchable: hi & PREFETCHABLE != 0, pci_addr, cpu_addr, size });
        }
        out
    }

    /// (rid-base, phandle, out-base, length) quadruples. For `iommu-map` the target path
    /// is kept only for SMMUv3 targets; for `msi-map` it is the MSI controller's path.
    fn id_map(&mut self, n: usize, prop: &'static str, iommu: bool) -> Vec<IdMap> {
        let t = self.t;
        let Some(c) = self.ok(n, t.cells_prop(n, prop)).flatten() else {
            return Vec::new();
        };
        if !c.len().is_multiple_of(4) {
            self.err(n, Problem::BadLength { prop, len: c.len().saturating_mul(4) });
            return Vec::new();
        }
        let mut out = Vec::new();
        for e in c.chunks_exact(4) {
            let &[rid_base, ph, sid_base, length] = e else {
                continue;
            };
            let target = t.by_phandle(ph);
            if target.is_none() {
                self.err(n, Problem::UnresolvedPhandle { prop, phandle: ph });
            }
            let smmu = target.filter(|&x| !iommu || t.is_compatible(x, SMMU_V3)).map(|x| t.path(x).to_string());
            out.push(IdMap { rid_base, iommu_phandle: ph, smmu, sid_base, length });
        }
        out
    }
}
