//! MSI remapping: every DMA domain keeps an IOVA window for MSI doorbells (Linux's
//! software MSI region and "MSI cookie") and maps an ITS doorbell page there when a
//! device's MSI is composed; identity domains and devices without an SMMU use the
//! doorbell's physical address. The window arithmetic is pure and host-tested.

use super::iova::{IovaAllocator, IovaError};

/// The window Linux reserves for MSI doorbells in DMA domains (MSI_IOVA_BASE/LENGTH).
pub const MSI_IOVA_BASE: u64 = 0x0800_0000;
pub const MSI_IOVA_LEN: u64 = 0x10_0000;

/// Take the MSI window out of a DMA domain's IOVA space, so no buffer lands there.
pub fn reserve_window(a: &mut IovaAllocator) -> Result<(), IovaError> {
    a.reserve(MSI_IOVA_BASE, MSI_IOVA_LEN)
}

/// The granule-aligned slots of the window, in the order they are used.
pub fn window_slots(granule: u64) -> impl Iterator<Item = u64> {
    (MSI_IOVA_BASE..MSI_IOVA_BASE + MSI_IOVA_LEN).step_by(granule.max(1) as usize)
}

/// Split a doorbell into the page to map and its offset in that page.
pub fn page_and_offset(doorbell: u64, granule: u64) -> (u64, u64) {
    let mask = granule - 1;
    (doorbell & !mask, doorbell & mask)
}

#[cfg(target_os = "none")]
pub use hw::*;

#[cfg(target_os = "none")]
mod hw {
    use super::{page_and_offset, window_slots};
    use crate::iommu::domain::{DomainId, DomainType, IOMMU, IommuError, MasterId};
    use crate::iommu::io_pgtable::Prot;

    /// Where a device must write to reach a doorbell.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MsiAddress {
        /// The address to program into the device (IOVA or physical).
        pub addr: u64,
        /// Set when `compose` mapped the doorbell into this DMA domain just now
        /// (`(domain, IOVA of the page)`); `release` undoes exactly that.
        pub mapped: Option<(DomainId, u64)>,
        /// The doorbell is reached through the SMMU (a DMA domain's MSI window).
        pub translated: bool,
    }

    /// The MSI address for `doorbell` (physical) as seen by a device behind `master`
    /// (`None`: no SMMU): physical on the direct and identity paths, an IOVA in the
    /// domain's MSI window on the DMA path (mapped now if not yet). Blocked and
    /// unmanaged domains have no MSI window: their owner must provide one.
    pub fn compose(master: Option<MasterId>, doorbell: u64) -> Result<MsiAddress, IommuError> {
        let direct = MsiAddress { addr: doorbell, mapped: None, translated: false };
        let Some(m) = master else { return Ok(direct) };
        let mut io = IOMMU.lock();
        let did = io.domain_of(m).ok_or(IommuError::Config("device is blocked (no domain): no MSI".into()))?;
        let d = io.domain(did)?;
        match d.ty {
            DomainType::Identity => return Ok(direct),
            DomainType::Dma => {}
            _ => return Err(IommuError::Config(alloc::format!("domain {did} has no MSI window ({:?})", d.ty))),
        }
        let g = d.granule.size();
        let (page, off) = page_and_offset(doorbell, g);
        let mut free = None;
        for slot in window_slots(g) {
            match io.iova_to_phys(did, slot) {
                Some(pa) if pa == page => return Ok(MsiAddress { addr: slot + off, mapped: None, translated: true }),
                None if free.is_none() => free = Some(slot),
                _ => {}
            }
        }
        let slot = free.ok_or(IommuError::Config("MSI window full".into()))?;
        io.map(did, slot, page, g, Prot::DEVICE_RW)?;
        Ok(MsiAddress { addr: slot + off, mapped: Some((did, slot)), translated: true })
    }

    /// Undo the mapping `compose` made (strict unmap: the IOTLB is invalidated).
    pub fn release(a: &MsiAddress) -> Result<(), IommuError> {
        let Some((did, slot)) = a.mapped else { return Ok(()) };
        let mut io = IOMMU.lock();
        let g = io.domain(did)?.granule.size();
        io.unmap(did, slot, g)?;
        Ok(())
    }

    /// Remove whatever doorbell page is mapped at `addr`'s window slot in `did`
    /// (test hook: the device keeps writing there and must fault).
    #[doc(hidden)]
    pub fn unmap_slot(did: DomainId, addr: u64) -> Result<u64, IommuError> {
        let mut io = IOMMU.lock();
        let g = io.domain(did)?.granule.size();
        io.unmap(did, addr & !(g - 1), g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_reserved_and_never_allocated() {
        let mut a = IovaAllocator::new(0x1000, (1 << 39) - 1, 0x1000).unwrap_or_else(|e| panic!("{e:?}"));
        reserve_window(&mut a).unwrap_or_else(|e| panic!("{e:?}"));
        // Fill everything below 256 MiB: nothing may come from the window.
        let mut n = 0;
        while let Ok(iova) = a.alloc(0x10_0000, 0x0fff_ffff) {
            assert!(iova + 0x10_0000 <= MSI_IOVA_BASE || iova >= MSI_IOVA_BASE + MSI_IOVA_LEN, "{iova:#x}");
            n += 1;
        }
        assert!(n > 100, "only {n} allocations");
        assert!(a.reserved().any(|(s, l)| s == MSI_IOVA_BASE && l == MSI_IOVA_LEN));
    }

    #[test]
    fn slots_and_offsets() {
        assert_eq!(window_slots(0x1000).count(), 256);
        assert_eq!(window_slots(0x1_0000).count(), 16);
        assert_eq!(window_slots(0x1000).next(), Some(MSI_IOVA_BASE));
        // QEMU virt's GITS_TRANSLATER.
        assert_eq!(page_and_offset(0x0809_0040, 0x1000), (0x0809_0000, 0x40));
        assert_eq!(page_and_offset(0x0809_0040, 0x1_0000), (0x0809_0000, 0x40));
    }
}
