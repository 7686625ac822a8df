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
by_line!(invalidate, "ivac", "Discard cached copies of [start, start+len): the next read comes from memory.");
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
