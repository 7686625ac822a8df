//! SMMUv3 nodes, their masters (`iommus`) and fixed IOVA mappings (`iommu-addresses`).
//! Bindings: iommu/arm,smmu-v3.yaml, iommu/iommu.txt, reserved-memory/reserved-memory.yaml.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::addr::{number, slice};
use super::{Ctx, DirectMap, Master, Problem, Smmu};

pub(crate) const SMMU_V3: &str = "arm,smmu-v3";
/// No IOMMU binding uses more than a handful of specifier cells.
const MAX_IOMMU_CELLS: u32 = 8;

/// Erratum flags: known Linux ones, plus any "vendor,...broken..." property so new
/// vendor quirks are at least visible in the report.
fn is_quirk(prop: &str) -> bool {
    matches!(prop, "hisilicon,broken-prefetch-cmd" | "cavium,cn9900-broken-page1-regspace")
        || prop
            .split_once(',')
            .is_some_and(|(vendor, _)| !vendor.is_empty() && !vendor.starts_with('#') && prop.contains("broken"))
}

impl Ctx<'_, '_> {
    /// Every `arm,smmu-v3` node, enabled or not; skipped only if `reg` is unusable.
    pub(crate) fn smmus(&mut self) -> Vec<Smmu> {
        let t = self.t;
        let mut out = Vec::new();
        for n in t.indices().filter(|&n| t.is_compatible(n, SMMU_V3)) {
            let Some((base, size)) = self.ok(n, t.reg0(n)) else {
                continue;
            };
            let irqs = self.ok(n, t.irqs(n)).unwrap_or_default();
            let irq_parents = irqs.parents;
            let named = self.named_irqs(n, irqs.specs, &[]);
            let msi_parent = self.msi_parent(n);
            let msi_device_id = self.msi_device_id(n);
            let quirks = t
                .node(n)
                .map(|node| node.props.iter().filter(|p| is_quirk(p.name)).map(|p| p.name.to_string()).collect())
                .unwrap_or_default();
            out.push(Smmu {
                node: t.path(n).to_string(),
                phandle: t.phandle_of(n),
                base,
                size,
                enabled: t.is_enabled(n),
                coherent: t.is_coherent(n),
                irqs: named,
                interrupt_parent: irqs.parent,
                irq_parents,
                msi_parent,
                msi_device_id,
                quirks,
            });
        }
        out
    }

    /// The DeviceID cell of `msi-parent = <&ctrl id>` when `ctrl` has `#msi-cells = <1>`
    /// (the arm,gic-v3-its binding); errors already reported by `msi_parent`.
    pub(crate) fn msi_device_id(&mut self, n: usize) -> Option<u32> {
        let t = self.t;
        let cells = t.cells_prop(n, "msi-parent").ok().flatten()?;
        let ctrl = t.by_phandle(*cells.first()?)?;
        match t.u32_prop(ctrl, "#msi-cells").ok().flatten() {
            Some(1) => cells.get(1).copied(),
            _ => None,
        }
    }

    /// First cell of `msi-parent` (the controller phandle; a following cell, if the
    /// controller has `#msi-cells`, is a device ID we do not need here).
    pub(crate) fn msi_parent(&mut self, n: usize) -> Option<u32> {
        let t = self.t;
        let ph = self.ok(n, t.cells_prop(n, "msi-parent")).flatten()?.first().copied()?;
        if t.by_phandle(ph).is_none() {
            self.err(n, Problem::UnresolvedPhandle { prop: "msi-parent", phandle: ph });
        }
        Some(ph)
    }

    /// Devices with `iommus` pointing at an SMMUv3; one entry per (device, SMMU).
    /// Specifiers for other IOMMUs (arm,mmu-500, rockchip,iommu...) are skipped silently.
    pub(crate) fn masters(&mut self) -> Vec<Master> {
        let t = self.t;
        let mut out = Vec::new();
        for n in t.indices() {
            let Some(spec) = self.ok(n, t.cells_prop(n, "iommus")).flatten() else {
                continue;
            };
            let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
            let mut pos = 0usize;
            while let Some(&ph) = spec.get(pos) {
                let Some(target) = t.by_phandle(ph) else {
                    self.err(n, Problem::UnresolvedPhandle { prop: "iommus", phandle: ph });
                    break;
                };
                let nc = match t.u32_prop(target, "#iommu-cells") {
                    Ok(Some(c)) if c <= MAX_IOMMU_CELLS => c,
                    Ok(Some(c)) => {
                        let bus = t.path(target).to_string();
                        self.err(n, Problem::AbsurdCells { bus, prop: "#iommu-cells", value: c });
                        break;
                    }
                    Ok(None) => {
                        let target = t.path(target).to_string();
                        self.err(n, Problem::MissingCells { prop: "#iommu-cells", target });
                        break;
                    }
                    Err(p) => {
                        self.err(target, p);
                        break;
                    }
                };
                let start = pos.saturating_add(1);
                let Some(cells) = slice(&spec, start, nc as usize) else {
                    self.err(n, Problem::BadLength { prop: "iommus", len: spec.len().saturating_mul(4) });
                    break;
                };
                if t.is_compatible(target, SMMU_V3) {
                    let group = match groups.iter().position(|(s, _)| *s == target) {
                        Some(i) => groups.get_mut(i),
                        None => {
                            groups.push((target, Vec::new()));
                            groups.last_mut()
                        }
                    };
                    match cells.first() {
                        None => self.err(n, Problem::NoStreamId { target: t.path(target).to_string() }),
                        Some(&sid) => {
                            if nc != 1 {
                                self.err(n, Problem::IommuCells { target: t.path(target).to_string(), cells: nc });
                            }
                            if let Some((_, sids)) = group {
                                sids.push(sid);
                            }
                        }
                    }
                }
                pos = start.saturating_add(nc as usize);
            }
            for (smmu, stream_ids) in groups {
                out.push(Master {
                    node: t.path(n).to_string(),
                    smmu: t.path(smmu).to_string(),
                    stream_ids,
                    enabled: t.is_enabled(n),
                });
            }
        }
        out
    }

    /// `iommu-addresses = <&dev iova size>...` on enabled `/reserved-memory` children.
    /// The specifier uses the cell counts of the device's parent bus: that is what the
    /// binding says ("#address-cells/#size-cells of the device referenced via the
    /// phandle") and what Linux `of_translate_dma_region` reads. The IOVA is taken raw
    /// (no `dma-ranges` translation). Linux only honours a region the device also lists
    /// in `memory-region`; we keep the entry but report the omission.
    pub(crate) fn direct_maps(&mut self) -> Vec<DirectMap> {
        let t = self.t;
        let mut out = Vec::new();
        let Some(rm) = t.find_path("/reserved-memory") else {
            return out;
        };
        for &c in t.children(rm) {
            if !t.is_enabled(c) {
                continue;
            }
            let Some(spec) = self.ok(c, t.cells_prop(c, "iommu-addresses")).flatten() else {
                continue;
            };
            let region_ph = t.phandle_of(c);
            let mut pos = 0usize;
            while let Some(&ph) = spec.get(pos) {
                let Some(dev) = t.by_phandle(ph) else {
                    self.err(c, Problem::UnresolvedPhandle { prop: "iommu-addresses", phandle: ph });
                    break;
                };
                let Some(bus) = t.parent(dev) else {
                    self.err(c, Problem::MissingCells { prop: "#address-cells", target: t.path(dev).to_string() });
                    break;
                };
                let Some(na) = self.ok(c, t.addr_cells(bus)) else {
                    break;
                };
                let Some(ns) = self.ok(c, t.size_cells(bus)) else {
                    break;
                };
                let (na, ns) = (na as usize, ns as usize);
                let start = pos.saturating_add(1);
                let (Some(a), Some(s)) = (slice(&spec, start, na), slice(&spec, start.saturating_add(na), ns)) else {
                    self.err(c, Problem::BadLength { prop: "iommu-addresses", len: spec.len().saturating_mul(4) });
                    break;
                };
                let (iova, size) = (number(a), number(s));
                match (u64::try_from(iova), u64::try_from(size)) {
                    (Ok(iova), Ok(size)) => {
                        let listed = t
                            .cells_prop(dev, "memory-region")
                            .ok()
                            .flatten()
                            .is_some_and(|r| region_ph.is_some_and(|p| r.contains(&p)));
                        if !listed {
                            self.err(c, Problem::NotInMemoryRegion { dev: String::from(t.path(dev)) });
                        }
                        out.push(DirectMap {
                            node: t.path(c).to_string(),
                            master: t.path(dev).to_string(),
                            iova,
                            size,
                        });
                    }
                    _ => self.err(c, Problem::AddressTooWide(iova.max(size))),
                }
                pos = start.saturating_add(na).saturating_add(ns);
            }
        }
        out
    }
}
