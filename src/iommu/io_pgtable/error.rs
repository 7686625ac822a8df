//! Error type of the I/O page-table module.

use core::fmt;

/// Why a page-table operation was refused.
///
/// Every error except the ones documented on [`IoPageTable::unmap`](super::IoPageTable::unmap)
/// leaves the table exactly as it was before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgtError {
    /// `what` ("iova", "pa" or "size") is not a multiple of the granule (`align`).
    Unaligned { what: &'static str, value: u64, align: u64 },
    /// A zero-sized map or unmap.
    ZeroSize,
    /// `[addr, addr + size)` does not fit in `bits` bits (`what` is "iova" or "pa").
    OutOfRange { what: &'static str, addr: u64, size: u64, bits: u8 },
    /// `iova` (the lowest mapped address in the requested range) is already mapped.
    AlreadyMapped { iova: u64 },
    /// Nothing at all was mapped in the range given to `unmap` (starting at `iova`).
    NotMapped { iova: u64 },
    /// `TableMemory::alloc_table` failed.
    NoMemory,
    /// `TableMemory::alloc_table` returned memory that is misaligned or beyond the output size.
    BadTableMemory { pa: u64 },
    /// The configuration is not supported.
    BadConfig(&'static str),
    /// The permissions cannot be expressed (no read and no write).
    BadProt(&'static str),
    /// A block split from an earlier `unmap` waits for `IoPageTable::complete`.
    SplitPending,
    /// The gather belongs to another page table.
    ForeignGather,
}

impl fmt::Display for PgtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PgtError::Unaligned { what, value, align } => {
                write!(f, "{what} {value:#x} is not aligned to {align:#x}")
            }
            PgtError::ZeroSize => f.write_str("size is zero"),
            PgtError::OutOfRange { what, addr, size, bits } => {
                write!(f, "{what} range {addr:#x}+{size:#x} exceeds {bits} bits")
            }
            PgtError::AlreadyMapped { iova } => write!(f, "iova {iova:#x} is already mapped"),
            PgtError::NotMapped { iova } => write!(f, "nothing mapped in range at iova {iova:#x}"),
            PgtError::NoMemory => f.write_str("out of page-table memory"),
            PgtError::BadTableMemory { pa } => {
                write!(f, "table memory at pa {pa:#x} is misaligned or out of range")
            }
            PgtError::BadConfig(why) => write!(f, "bad page-table config: {why}"),
            PgtError::BadProt(why) => write!(f, "bad protection: {why}"),
            PgtError::SplitPending => f.write_str("a block split awaits complete() after TLB invalidation"),
            PgtError::ForeignGather => f.write_str("gather belongs to another page table"),
        }
    }
}

impl core::error::Error for PgtError {}
