//! Facts about this boot that every layer may ask for: where the image was loaded,
//! where the DTB is, which EL the loader entered at. Plain atomics, set once.

use core::sync::atomic::{AtomicU64, Ordering};

pub struct BootInfo {
    pub load_addr: u64,
    pub image_size: u64,
    pub dtb: u64,
    pub dtb_size: u64,
    pub entry_el: u8,
    pub unsupported_relocs: u64,
    ram_lo: u64,
    ram_hi: u64,
}

impl BootInfo {
    /// Is [addr, addr+len) inside the span of RAM (used to guard backtraces)?
    pub fn in_ram(&self, addr: u64, len: u64) -> bool {
        addr >= self.ram_lo && addr.saturating_add(len) <= self.ram_hi
    }
}

static LOAD: AtomicU64 = AtomicU64::new(0);
static SIZE: AtomicU64 = AtomicU64::new(0);
static DTB: AtomicU64 = AtomicU64::new(0);
static DTB_SIZE: AtomicU64 = AtomicU64::new(0);
static EL: AtomicU64 = AtomicU64::new(0);
static RELOCS: AtomicU64 = AtomicU64::new(0);
static RAM_LO: AtomicU64 = AtomicU64::new(0);
static RAM_HI: AtomicU64 = AtomicU64::new(0);

pub fn record(load: u64, size: u64, dtb: u64, dtb_size: u64, el: u8, relocs: u64) {
    LOAD.store(load, Ordering::Relaxed);
    SIZE.store(size, Ordering::Relaxed);
    DTB.store(dtb, Ordering::Relaxed);
    DTB_SIZE.store(dtb_size, Ordering::Relaxed);
    EL.store(el as u64, Ordering::Relaxed);
    RELOCS.store(relocs, Ordering::Relaxed);
    // Until the memory nodes are read, RAM is at least the image.
    RAM_LO.store(load, Ordering::Relaxed);
    RAM_HI.store(load + size, Ordering::Relaxed);
}

pub fn set_ram_span(lo: u64, hi: u64) {
    RAM_LO.store(lo, Ordering::Relaxed);
    RAM_HI.store(hi, Ordering::Relaxed);
}

pub fn boot_info() -> BootInfo {
    BootInfo {
        load_addr: LOAD.load(Ordering::Relaxed),
        image_size: SIZE.load(Ordering::Relaxed),
        dtb: DTB.load(Ordering::Relaxed),
        dtb_size: DTB_SIZE.load(Ordering::Relaxed),
        entry_el: EL.load(Ordering::Relaxed) as u8,
        unsupported_relocs: RELOCS.load(Ordering::Relaxed),
        ram_lo: RAM_LO.load(Ordering::Relaxed),
        ram_hi: RAM_HI.load(Ordering::Relaxed),
    }
}

/// Size of the flattened device tree at `ptr` from its header, if the magic is right.
///
/// # Safety
/// `ptr` must be null or point to at least 8 readable bytes.
pub unsafe fn fdt_total_size(ptr: *const u8) -> Option<usize> {
    if ptr.is_null() || !(ptr as usize).is_multiple_of(8) {
        return None;
    }
    // SAFETY: the loader passes a DTB here; the header is 8-byte aligned and at
    // least 8 bytes long (magic, totalsize) when the magic matches.
    let (magic, size) = unsafe { (u32::from_be(*(ptr as *const u32)), u32::from_be(*(ptr.add(4) as *const u32))) };
    if magic != 0xd00d_feed || size < 40 {
        return None;
    }
    Some(size as usize)
}
