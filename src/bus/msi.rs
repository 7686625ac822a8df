//! PCI MSI: which MSI controller and DeviceID a function's MSIs carry (`msi-map`,
//! else `msi-parent` with the RID), its MSI capability (through `pci_types`), and
//! `enable`: an LPI from the ITS, the doorbell as the device must address it (an IOVA
//! when an SMMU translates it), the capability programmed and switched on.

use crate::dt::PciHost;

/// Requester ID -> (MSI controller phandle, DeviceID), Linux `of_msi_map_id`
/// semantics: the first `msi-map` entry covering the RID translates it; a host with an
/// `msi-map` that covers nothing gives `None` (no MSIs); without `msi-map`, the
/// `msi-parent` (or the platform's first ITS, `None` phandle) sees the RID itself.
pub fn rid_to_devid(host: &PciHost, rid: u16) -> Option<(Option<u32>, u32)> {
    let id = u32::from(rid);
    if host.msi_map.is_empty() {
        return Some((host.msi_parent, id));
    }
    host.msi_map.iter().find_map(|m| {
        let end = u64::from(m.rid_base) + u64::from(m.length);
        (id >= m.rid_base && u64::from(id) < end)
            .then(|| (Some(m.iommu_phandle), id.wrapping_sub(m.rid_base).wrapping_add(m.sid_base)))
    })
}

#[cfg(target_os = "none")]
pub use hw::*;

#[cfg(target_os = "none")]
mod hw {
    use super::rid_to_devid;
    use crate::bus::pci::{Ecam, Function};
    use crate::dt::PciHost;
    use crate::iommu::domain::{IommuError, MasterId};
    use crate::iommu::msi::{self as remap, MsiAddress};
    use crate::irq::{self, IrqError, MsiVector};
    use core::fmt;
    use pci_types::capability::{MsiCapability, PciCapability};
    use pci_types::{CommandRegister, EndpointHeader, PciHeader};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum MsiError {
        /// The function has no MSI capability.
        NoCapability,
        /// The host's `msi-map` does not cover this Requester ID.
        NotMapped {
            rid: u16,
        },
        Irq(IrqError),
        Iommu(IommuError),
    }

    impl fmt::Display for MsiError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                MsiError::NoCapability => write!(f, "no MSI capability"),
                MsiError::NotMapped { rid } => write!(f, "RID {rid:#x} is not in the host's msi-map"),
                MsiError::Irq(e) => write!(f, "{e}"),
                MsiError::Iommu(e) => write!(f, "MSI doorbell mapping: {e}"),
            }
        }
    }

    /// One enabled MSI: the LPI and the address/data the device was given.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Msi {
        pub vector: MsiVector,
        pub address: MsiAddress,
    }

    /// The function's MSI capability, if it has one, and its config-space offset.
    fn find(ecam: &Ecam, f: &Function) -> Option<(MsiCapability, u16)> {
        let ep = EndpointHeader::from_header(PciHeader::new(f.addr), *ecam)?;
        ep.capabilities(*ecam).find_map(|c| {
            let at = c.address().offset;
            match c {
                PciCapability::Msi(m) => Some((m, at)),
                _ => None,
            }
        })
    }

    /// The function's MSI capability, if it has one.
    pub fn capability(ecam: &Ecam, f: &Function) -> Option<MsiCapability> {
        find(ecam, f).map(|(m, _)| m)
    }

    /// Give `f` (behind `master` in the IOMMU layer, `None` without an SMMU) one MSI
    /// vector: an LPI from the ITS named by the host's `msi-map`, the doorbell address
    /// composed for the device's current domain, the capability programmed with it and
    /// enabled, INTx off. The LPI stays disabled until `irq::enable(vector.intid)`.
    pub fn enable(ecam: &Ecam, f: &Function, host: &PciHost, master: Option<MasterId>) -> Result<Msi, MsiError> {
        let cap = capability(ecam, f).ok_or(MsiError::NoCapability)?;
        let (parent, devid) = rid_to_devid(host, f.dma_alias).ok_or(MsiError::NotMapped { rid: f.dma_alias })?;
        let vector = irq::alloc_msi(parent, devid).map_err(MsiError::Irq)?;
        let address = match remap::compose(master, vector.doorbell) {
            Ok(a) => a,
            Err(e) => {
                let _ = irq::free_msi(&vector);
                return Err(MsiError::Iommu(e));
            }
        };
        cap.set_enabled(false, *ecam);
        cap.set_message_info(address.addr, vector.data, *ecam);
        cap.set_multiple_message_enable(pci_types::capability::MultipleMessageSupport::Int1, *ecam);
        let mut h = PciHeader::new(f.addr);
        h.update_command(*ecam, |c| c | CommandRegister::INTERRUPT_DISABLE);
        cap.set_enabled(true, *ecam);
        Ok(Msi { vector, address })
    }

    /// Undo `enable`: capability off, the doorbell mapping `enable` made removed, the
    /// LPI and its ITS mapping freed.
    pub fn disable(ecam: &Ecam, f: &Function, msi: &Msi) -> Result<(), MsiError> {
        if let Some(cap) = capability(ecam, f) {
            cap.set_enabled(false, *ecam);
        }
        let r1 = remap::release(&msi.address).map_err(MsiError::Iommu);
        let r2 = irq::free_msi(&msi.vector).map_err(MsiError::Irq);
        r1.and(r2)
    }

    /// (address, data, enabled) as the capability holds them now.
    pub fn read_back(ecam: &Ecam, f: &Function) -> Option<(u64, u32, bool)> {
        use pci_types::ConfigRegionAccess;
        let (cap, base) = find(ecam, f)?;
        // SAFETY: reads of the function's own MSI capability registers.
        let (lo, hi, data) = unsafe {
            let lo = ecam.read(f.addr, base + 4);
            let hi = if cap.is_64bit() { ecam.read(f.addr, base + 8) } else { 0 };
            let data = ecam.read(f.addr, base + if cap.is_64bit() { 0xc } else { 8 });
            (lo, hi, data)
        };
        Some(((u64::from(hi) << 32) | u64::from(lo), data & 0xffff, cap.is_enabled(*ecam)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dt::IdMap;

    fn host(msi_map: alloc::vec::Vec<IdMap>, msi_parent: Option<u32>) -> PciHost {
        PciHost {
            node: "/pcie".into(),
            ecam_base: 0,
            ecam_size: 0,
            bus_range: (0, 255),
            ranges: alloc::vec::Vec::new(),
            iommu_map: alloc::vec::Vec::new(),
            iommu_map_mask: None,
            msi_map,
            msi_parent,
            coherent: true,
            enabled: true,
            devices: alloc::vec::Vec::new(),
        }
    }

    fn entry(rid_base: u32, its: u32, sid_base: u32, length: u32) -> IdMap {
        IdMap { rid_base, iommu_phandle: its, smmu: None, sid_base, length }
    }

    #[test]
    fn msi_map_translates_rids() {
        // QEMU virt: msi-map = <0 &its 0 0x10000>.
        let h = host(alloc::vec![entry(0, 0x8003, 0, 0x10000)], None);
        assert_eq!(rid_to_devid(&h, 0x10), Some((Some(0x8003), 0x10)));
        // An offset map, and a RID it does not cover.
        let h = host(alloc::vec![entry(0x100, 7, 0x2000, 0x100)], Some(9));
        assert_eq!(rid_to_devid(&h, 0x105), Some((Some(7), 0x2005)));
        assert_eq!(rid_to_devid(&h, 0x10), None);
        // No msi-map: the RID as DeviceID, to msi-parent.
        assert_eq!(rid_to_devid(&host(alloc::vec![], Some(9)), 0x18), Some((Some(9), 0x18)));
        assert_eq!(rid_to_devid(&host(alloc::vec![], None), 0x18), Some((None, 0x18)));
    }
}
