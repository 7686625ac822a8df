//! Table memory supplied by the driver, and raw descriptor access.

/// Where table memory comes from.
///
/// # Safety
///
/// The page-table code dereferences the pointers this trait hands out, so implementors
/// guarantee:
/// * `alloc_table(bytes)` returns `(pa, va)` where `va` points to `bytes` bytes of zeroed,
///   8-byte aligned memory, physically contiguous at `pa`, `pa` aligned to `bytes`, not
///   aliased by anything else until it is given back with `free_table`.
/// * `phys_to_virt(pa)` returns the `va` of a table (or of the first table of a
///   concatenated root) previously returned by `alloc_table` and not yet freed.
/// * `free_table` receives tables with arbitrary contents (tables are *not* zeroed before they
///   are given back); `alloc_table` must zero again.
pub unsafe trait TableMemory {
    /// Allocate `bytes` (a power of two: the granule size, or up to 16 granules for a
    /// concatenated stage-2 root), zeroed, aligned to `bytes`. Returns `(pa, va)`.
    fn alloc_table(&mut self, bytes: usize) -> Option<(u64, *mut u64)>;
    /// Give back a table from `alloc_table`.
    fn free_table(&mut self, pa: u64, va: *mut u64, bytes: usize);
    /// PA -> CPU pointer for a table previously allocated (walks need it).
    fn phys_to_virt(&self, pa: u64) -> *mut u64;
    /// Make CPU writes to `[va, va + len)` visible to a non-coherent table walker (clean the
    /// D-cache to the PoC, then a DSB). Only called when `Config::coherent_walk` is false.
    fn sync_for_device(&self, va: *const u64, len: usize);
}

/// A table (or concatenated root) in CPU address space. Indices are masked to the table size,
/// so no access can leave the table whatever index the caller computes.
#[derive(Clone, Copy)]
pub(crate) struct TablePtr {
    va: *mut u64,
    mask: usize,
}

impl TablePtr {
    /// Points nowhere: only for a slot that is never dereferenced while it holds this.
    pub(crate) const DANGLING: TablePtr = TablePtr { va: core::ptr::null_mut(), mask: 0 };

    /// # Safety
    ///
    /// `va` must point to `entries` (a power of two) 8-byte aligned `u64` descriptors of table
    /// memory that stays allocated while this value (or a copy) is used, and that no Rust
    /// reference aliases.
    #[inline(always)]
    pub(crate) unsafe fn new(va: *mut u64, entries: usize) -> Self {
        debug_assert!(entries.is_power_of_two());
        TablePtr { va, mask: entries - 1 }
    }

    #[inline(always)]
    pub(crate) fn va(self) -> *mut u64 {
        self.va
    }

    #[inline(always)]
    pub(crate) fn entries(self) -> usize {
        self.mask + 1
    }

    /// Read descriptor `idx` with one 64-bit load.
    #[inline(always)]
    pub(crate) fn get(self, idx: usize) -> u64 {
        debug_assert!(idx <= self.mask);
        // SAFETY: `idx & mask` < entries, and `new`'s contract makes every such entry valid,
        // aligned, allocated memory. Volatile: the SMMU shares the memory.
        unsafe { self.va.add(idx & self.mask).read_volatile() }
    }

    /// Write descriptor `idx` with one 64-bit store (the walker may read it concurrently).
    #[inline(always)]
    pub(crate) fn set(self, idx: usize, v: u64) {
        debug_assert!(idx <= self.mask);
        // SAFETY: as in `get`; a volatile aligned u64 store is a single-copy-atomic 64-bit
        // store on AArch64, so the walker never sees a torn descriptor.
        unsafe { self.va.add(idx & self.mask).write_volatile(v) }
    }

    /// All descriptors as a slice, for bulk scans that the compiler may vectorise.
    ///
    /// # Safety
    ///
    /// Nothing may write the table while the slice lives (a walker only reads it).
    #[inline(always)]
    pub(crate) unsafe fn as_slice<'a>(self) -> &'a [u64] {
        // SAFETY: `new`'s contract: `mask + 1` valid, aligned, allocated descriptors; the caller
        // rules out writes for the slice's lifetime.
        unsafe { core::slice::from_raw_parts(self.va, self.mask + 1) }
    }

    /// Pointer to entry `idx` (for cache maintenance).
    #[inline(always)]
    pub(crate) fn entry_ptr(self, idx: usize) -> *const u64 {
        self.va.wrapping_add(idx & self.mask)
    }
}

/// Order all earlier table writes before a following store that publishes them (a table
/// descriptor), as observed by the SMMU (outer-shareable observer): `dmb oshst`.
#[inline(always)]
pub(crate) fn publish_barrier() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a data memory barrier has no effect besides ordering memory accesses; no
    // registers, stack or flags are touched.
    unsafe {
        core::arch::asm!("dmb oshst", options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
}
