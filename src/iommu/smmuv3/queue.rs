//! A circular queue in memory shared with the SMMU (command or event queue): base,
//! size, entry width, and the software copies of PROD and CONS with the wrap bit.

use super::cmd::QueueIndex;
use crate::iommu::hwmem::HwMem;

pub struct Queue {
    pub pa: u64,
    pub ix: QueueIndex,
    /// Bytes per entry: 16 for commands, 32 for events.
    pub entry_bytes: usize,
    pub prod: u32,
    pub cons: u32,
}

impl Queue {
    /// Allocate 2^log2 entries; the base is aligned to the queue size (at least 32
    /// bytes), as Q_BASE requires.
    pub fn new(mem: &HwMem, log2: u8, entry_bytes: usize) -> Option<Queue> {
        let bytes = (entry_bytes << log2).max(32);
        let pa = mem.alloc(bytes)?;
        if pa % bytes as u64 != 0 {
            mem.free(pa, bytes);
            return None;
        }
        Some(Queue { pa, ix: QueueIndex::new(log2), entry_bytes, prod: 0, cons: 0 })
    }

    /// Address of the slot an index points at.
    pub fn slot(&self, p: u32) -> u64 {
        self.pa + self.ix.idx(p) as u64 * self.entry_bytes as u64
    }

    /// Q_BASE register value: RA=1, ADDR, LOG2SIZE.
    pub fn base_reg(&self) -> u64 {
        (1 << 62) | (self.pa & 0x000f_ffff_ffff_ffe0) | self.ix.log2size() as u64
    }
}
