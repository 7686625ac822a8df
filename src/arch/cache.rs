//! Data-cache maintenance by virtual address, for memory shared with observers
//! that do not snoop the CPU caches (non-coherent SMMUs and DMA masters).

use core::arch::asm;

fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4 << ((ctr >> 16) & 0xf)
}

macro_rules! by_line {
    ($name:ident, $op:literal, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(start: usize, len: usize) {
            if len == 0 {
                return;
            }
            let line = dcache_line();
            let mut a = start & !(line - 1);
            let end = start + len;
            while a < end {
                // SAFETY: cache maintenance by VA on an address the caller owns;
                // it changes no architectural memory contents for clean and
                // clean+invalidate, and the caller asked for invalidate.
                unsafe { asm!(concat!("dc ", $op, ", {}"), in(reg) a, options(nostack)) };
                a += line;
            }
            // SAFETY: barrier only.
            unsafe { asm!("dsb sy", options(nostack)) };
        }
    };
}

by_line!(clean, "cvac", "Write dirty lines of [start, start+len) back to the point of coherency.");
by_line!(
    discard,
    "ivac",
    "Drop every line touching [start, start+len), edges included: only for memory written with the MMU off, where a stale line must not be written back."
);
/// Discard cached copies of [start, start+len): the next read comes from memory. Lines the
/// range covers only in part are cleaned first, so bytes of neighbours sharing them survive.
pub fn invalidate(start: usize, len: usize) {
    use crate::mm::dcache::{LineOp, invalidate_lines};
    if len == 0 {
        return;
    }
    for (a, op) in invalidate_lines(start, len, dcache_line()) {
        match op {
            // SAFETY: the caller owns the whole line (it lies inside its range) and asked
            // for its cached copy to be dropped.
            LineOp::Invalidate => unsafe { asm!("dc ivac, {}", in(reg) a, options(nostack)) },
            // SAFETY: clean+invalidate changes no memory contents.
            LineOp::CleanInvalidate => unsafe { asm!("dc civac, {}", in(reg) a, options(nostack)) },
        }
    }
    dsb_sy();
}
by_line!(clean_invalidate, "civac", "Write back, then discard, the lines of [start, start+len).");

/// Full system data synchronization barrier.
pub fn dsb_sy() {
    // SAFETY: barrier only.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Order prior stores before later ones as seen by other inner-shareable observers
/// (a coherent SMMU reading a table the CPU just wrote).
pub fn dsb_ishst() {
    // SAFETY: barrier only.
    unsafe { asm!("dsb ishst", options(nostack)) };
}
