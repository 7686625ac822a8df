//! The kernel heap: a buddy allocator that starts on a static bootstrap arena (so
//! the device tree can be read) and grows into RAM once the memory map is known.

use buddy_system_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap<33> = LockedHeap::empty();

const BOOT_ARENA: usize = 4 << 20;

#[repr(C, align(4096))]
struct Arena([u8; BOOT_ARENA]);

static mut ARENA: Arena = Arena([0; BOOT_ARENA]);

/// Give the heap its bootstrap arena. Call once, after the MMU is on.
pub fn init_bootstrap() {
    let start = &raw mut ARENA as usize;
    // SAFETY: ARENA is used by nothing else, and this runs once at boot.
    unsafe { HEAP.lock().init(start, BOOT_ARENA) };
}

/// Add `[start, start+size)` of free RAM to the heap.
///
/// # Safety
/// The range must be normal memory, mapped, and owned by nothing else.
pub unsafe fn grow(start: usize, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { HEAP.lock().add_to_heap(start, start + size) };
}

/// (bytes handed out, bytes managed).
pub fn stats() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}
