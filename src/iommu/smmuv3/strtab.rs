//! The stream table: linear (one STE per StreamID) when the StreamID space is small,
//! two-level (SPLIT = 8: 256 STEs per level-2 table) otherwise, with level-2 tables
//! allocated as masters appear. Every new STE starts as abort: default deny.

use super::ste::{STE_QWORDS, Ste, l1_desc};
use crate::iommu::hwmem::HwMem;
use alloc::collections::BTreeMap;

pub const STE_BYTES: usize = 64;
pub const SPLIT: u8 = 8;
/// Above this many StreamID bits a linear table gets large (2^10 x 64 B = 64 KiB).
pub const LINEAR_MAX_BITS: u8 = 10;

pub enum Format {
    Linear,
    TwoLevel { l2: BTreeMap<u32, u64> },
}

pub struct StreamTable {
    /// Base of the linear table or of the level-1 descriptor array.
    pub pa: u64,
    pub sid_bits: u8,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrtabError {
    NoMemory { bytes: usize },
    SidOutOfRange { sid: u32, sid_bits: u8 },
    Misaligned { pa: u64, align: usize },
}

impl core::fmt::Display for StrtabError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StrtabError::NoMemory { bytes } => write!(f, "no memory for a {bytes}-byte stream table"),
            StrtabError::SidOutOfRange { sid, sid_bits } => {
                write!(f, "StreamID {sid:#x} is beyond the SMMU's {sid_bits} SID bits")
            }
            StrtabError::Misaligned { pa, align } => write!(f, "stream table at {pa:#x} not {align}-byte aligned"),
        }
    }
}

fn fill_abort(base: u64, count: usize) {
    let abort = Ste::abort().words();
    for i in 0..count {
        let p = (base as usize + i * STE_BYTES) as *mut u64;
        for (q, w) in abort.iter().enumerate() {
            // SAFETY: `base` is a freshly allocated table of `count` STEs owned by us.
            unsafe { core::ptr::write_volatile(p.add(q), *w) };
        }
    }
}

impl StreamTable {
    pub fn new(mem: &HwMem, sid_bits: u8, two_level: bool) -> Result<Self, StrtabError> {
        if two_level && sid_bits > SPLIT {
            // L1: one 8-byte descriptor per 256 StreamIDs, aligned to its size (>= 64 B).
            let n = 1usize << (sid_bits - SPLIT);
            let bytes = (n * 8).max(64);
            let pa = mem.alloc(bytes).ok_or(StrtabError::NoMemory { bytes })?;
            if pa % bytes as u64 != 0 {
                return Err(StrtabError::Misaligned { pa, align: bytes });
            }
            mem.to_device(pa, bytes);
            return Ok(StreamTable { pa, sid_bits, format: Format::TwoLevel { l2: BTreeMap::new() } });
        }
        let n = 1usize << sid_bits;
        let bytes = n * STE_BYTES;
        let pa = mem.alloc(bytes).ok_or(StrtabError::NoMemory { bytes })?;
        if pa % bytes as u64 != 0 {
            return Err(StrtabError::Misaligned { pa, align: bytes });
        }
        fill_abort(pa, n);
        mem.to_device(pa, bytes);
        Ok(StreamTable { pa, sid_bits, format: Format::Linear })
    }

    /// STRTAB_BASE_CFG: FMT, LOG2SIZE, SPLIT.
    pub fn base_cfg(&self) -> u32 {
        match self.format {
            Format::Linear => self.sid_bits as u32,
            Format::TwoLevel { .. } => (1 << 16) | ((SPLIT as u32) << 6) | self.sid_bits as u32,
        }
    }

    pub fn is_two_level(&self) -> bool {
        matches!(self.format, Format::TwoLevel { .. })
    }

    pub fn l2_tables(&self) -> usize {
        match &self.format {
            Format::Linear => 0,
            Format::TwoLevel { l2 } => l2.len(),
        }
    }

    /// Address of the STE for `sid`, allocating its level-2 table if needed. The
    /// bool is true when a new level-1 descriptor was written (the caller must make
    /// the SMMU forget any cached copy of the range).
    pub fn ste_pa(&mut self, mem: &HwMem, sid: u32) -> Result<(u64, bool), StrtabError> {
        if self.sid_bits < 32 && sid >> self.sid_bits != 0 {
            return Err(StrtabError::SidOutOfRange { sid, sid_bits: self.sid_bits });
        }
        match &mut self.format {
            Format::Linear => Ok((self.pa + sid as u64 * STE_BYTES as u64, false)),
            Format::TwoLevel { l2 } => {
                let l1 = sid >> SPLIT;
                let off = (sid & ((1 << SPLIT) - 1)) as u64 * STE_BYTES as u64;
                if let Some(base) = l2.get(&l1) {
                    return Ok((base + off, false));
                }
                let bytes = STE_BYTES << SPLIT;
                let base = mem.alloc(bytes).ok_or(StrtabError::NoMemory { bytes })?;
                fill_abort(base, 1 << SPLIT);
                mem.to_device(base, bytes);
                let desc = l1_desc(base, SPLIT + 1).map_err(|_| StrtabError::Misaligned { pa: base, align: bytes })?;
                let dpa = self.pa + l1 as u64 * 8;
                // SAFETY: dpa is inside our level-1 array; a single 64-bit store.
                unsafe { core::ptr::write_volatile(dpa as *mut u64, desc) };
                mem.to_device(dpa, 8);
                l2.insert(l1, base);
                Ok((base + off, true))
            }
        }
    }

    /// Current contents of an STE.
    pub fn read(pa: u64) -> [u64; STE_QWORDS] {
        let mut v = [0u64; STE_QWORDS];
        for (i, w) in v.iter_mut().enumerate() {
            // SAFETY: pa is an STE slot of our table (from ste_pa).
            *w = unsafe { core::ptr::read_volatile((pa as *const u64).add(i)) };
        }
        v
    }
}
