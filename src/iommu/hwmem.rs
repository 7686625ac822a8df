//! Memory an IOMMU walks or writes (stream tables, context descriptors, queues, page
//! tables): page frames, plus the cache maintenance a non-coherent SMMU needs. The CPU
//! maps RAM write-back; for a non-coherent walker every CPU write is cleaned to the
//! point of coherency and every read of SMMU-written memory is preceded by an invalidate.

use crate::arch::cache;
use crate::mm::{PAGE_SIZE, frames};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwMem {
    pub coherent: bool,
}

impl HwMem {
    /// Zeroed, physically contiguous memory of at least `bytes`, aligned to its
    /// (power-of-two) size. Returns the physical (== CPU) address.
    pub fn alloc(&self, bytes: usize) -> Option<u64> {
        let pages = bytes.div_ceil(PAGE_SIZE as usize).max(1);
        let pa = frames::alloc_zeroed(pages)?;
        if !self.coherent {
            // The zeroes must be in memory, and no dirty line may later be evicted
            // over what the SMMU writes.
            cache::clean_invalidate(pa as usize, pages * PAGE_SIZE as usize);
        }
        Some(pa)
    }

    pub fn free(&self, pa: u64, bytes: usize) {
        frames::free(pa, bytes.div_ceil(PAGE_SIZE as usize).max(1));
    }

    /// After the CPU wrote [pa, pa+len): make it visible to the SMMU.
    pub fn to_device(&self, pa: u64, len: usize) {
        if self.coherent {
            cache::dsb_ishst();
        } else {
            cache::clean(pa as usize, len);
        }
    }

    /// Before the CPU reads [pa, pa+len) that the SMMU wrote.
    pub fn to_cpu(&self, pa: u64, len: usize) {
        if !self.coherent {
            cache::invalidate(pa as usize, len);
        }
    }
}
