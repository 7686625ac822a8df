//! The kernel heap: a buddy allocator that starts on a static bootstrap arena (so
//! the device tree can be read) and grows into RAM once the memory map is known.
//!
//! Not the crate's `LockedHeap`: its plain spin lock would deadlock an interrupt handler
//! that allocates (or logs) while the code it interrupted is inside the allocator. The
//! heap's lock masks IRQs while held ([`IrqSpinLock`]).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{NonNull, null_mut};

use buddy_system_allocator::Heap;

use crate::arch::irqlock::IrqSpinLock;

struct KernelHeap(IrqSpinLock<Heap<33>>);

// SAFETY: every call goes to the buddy heap under its lock; `alloc` returns blocks the
// heap handed out for `layout` (or null), `dealloc` gives back such a block with its
// layout, as GlobalAlloc requires of callers.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().alloc(layout).map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc contract).
            unsafe { self.0.lock().dealloc(p, layout) }
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqSpinLock::new(Heap::empty()));

const BOOT_ARENA: usize = 4 << 20;

#[repr(C, align(4096))]
struct Arena([u8; BOOT_ARENA]);

static mut ARENA: Arena = Arena([0; BOOT_ARENA]);

/// Give the heap its bootstrap arena. Call once, after the MMU is on.
pub fn init_bootstrap() {
    let start = &raw mut ARENA as usize;
    // SAFETY: ARENA is used by nothing else, and this runs once at boot.
    unsafe { HEAP.0.lock().init(start, BOOT_ARENA) };
}

/// Add `[start, start+size)` of free RAM to the heap.
///
/// # Safety
/// The range must be normal memory, mapped, and owned by nothing else.
pub unsafe fn grow(start: usize, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { HEAP.0.lock().add_to_heap(start, start + size) };
}

/// (bytes handed out, bytes managed).
pub fn stats() -> (usize, usize) {
    let h = HEAP.0.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}

/// Someone holds the heap's lock (for tests: with IRQs masked while it is held, an
/// interrupt handler on a single CPU must never see it held).
pub fn is_locked() -> bool {
    HEAP.0.is_locked()
}
