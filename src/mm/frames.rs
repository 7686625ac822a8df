//! Page frames for tables, queues and DMA buffers: physically contiguous,
//! naturally aligned power-of-two blocks from a buddy allocator. Counts are kept
//! so tests can prove nothing leaked.

use super::PAGE_SIZE;
use super::layout::Span;
use crate::arch::irqlock::IrqSpinLock;
use buddy_system_allocator::FrameAllocator;

struct Frames {
    alloc: FrameAllocator<32>,
    free_pages: u64,
    total_pages: u64,
}

/// IRQ-safe: interrupt handlers may allocate frames (see `arch::irqlock`).
static FRAMES: IrqSpinLock<Frames> =
    IrqSpinLock::new(Frames { alloc: FrameAllocator::new(), free_pages: 0, total_pages: 0 });

/// Hand `span` (page aligned) to the frame allocator.
pub fn add(span: Span) {
    let mut f = FRAMES.lock();
    let (s, e) = ((span.start / PAGE_SIZE) as usize, (span.end / PAGE_SIZE) as usize);
    if s < e {
        f.alloc.add_frame(s, e);
        f.free_pages += (e - s) as u64;
        f.total_pages += (e - s) as u64;
    }
}

/// `pages` (rounded up to a power of two) contiguous zeroed pages, aligned to their
/// size. Returns the physical (== virtual) address.
pub fn alloc_zeroed(pages: usize) -> Option<u64> {
    let n = pages.max(1).next_power_of_two();
    let pa = {
        let mut f = FRAMES.lock();
        let frame = f.alloc.alloc(n)?;
        f.free_pages -= n as u64;
        frame as u64 * PAGE_SIZE
    };
    // SAFETY: the frames were just allocated to us and are identity-mapped RAM.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, n * PAGE_SIZE as usize) };
    Some(pa)
}

/// Someone holds the frame allocator's lock (for tests, like `heap::is_locked`).
pub fn is_locked() -> bool {
    FRAMES.is_locked()
}

/// Give back pages from `alloc_zeroed` (same `pages`).
pub fn free(pa: u64, pages: usize) {
    let n = pages.max(1).next_power_of_two();
    let mut f = FRAMES.lock();
    f.alloc.dealloc((pa / PAGE_SIZE) as usize, n);
    f.free_pages += n as u64;
}

/// Zeroed page frames owned until dropped: a page-aligned buffer, e.g. for DMA (a 64 KiB
/// buffer spans 16 pages, not the 17 a heap buffer straddling page boundaries would make
/// the DMA API map), aligned to its size when that is a power of two of pages.
pub struct FrameBuf {
    pub pa: u64,
    pages: usize,
}

impl FrameBuf {
    /// At least `len` bytes (whole pages).
    pub fn alloc(len: usize) -> Option<FrameBuf> {
        let pages = len.div_ceil(PAGE_SIZE as usize).max(1);
        Some(FrameBuf { pa: alloc_zeroed(pages)?, pages })
    }

    /// Bytes owned (whole pages).
    pub fn size(&self) -> usize {
        self.pages * PAGE_SIZE as usize
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `pages` pages of RAM this buffer owns since alloc_zeroed, mapped normal at
        // VA == PA; `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.pa as *mut u8, self.size()) }
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        free(self.pa, self.pages);
    }
}

/// (free pages, total pages).
pub fn stats() -> (u64, u64) {
    let f = FRAMES.lock();
    (f.free_pages, f.total_pages)
}
