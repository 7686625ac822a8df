//! The generic timer's physical counter: time stamps and bounded waits.

use core::arch::asm;

/// Counter ticks since boot (CNTPCT_EL0).
pub fn ticks() -> u64 {
    let v: u64;
    // SAFETY: reading the counter has no side effects; ISB orders it after prior code.
    unsafe { asm!("isb; mrs {}, cntpct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Counter frequency in Hz (CNTFRQ_EL0).
pub fn freq() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    if v == 0 { 62_500_000 } else { v }
}

pub fn ticks_to_us(t: u64) -> u64 {
    (t as u128 * 1_000_000 / freq() as u128) as u64
}

pub fn ticks_to_ns(t: u64) -> u64 {
    (t as u128 * 1_000_000_000 / freq() as u128) as u64
}

/// A point in time after which a poll gives up.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    pub fn after_us(us: u64) -> Self {
        // u64 is enough: it saturates only past 5 hours at 1 GHz, and a saturated product
        // still means "far away". (A u128 product needs a division call on aarch64.)
        Deadline(ticks().saturating_add(us.saturating_mul(freq()) / 1_000_000))
    }
    pub fn after_ms(ms: u64) -> Self {
        Self::after_us(ms.saturating_mul(1000))
    }
    pub fn expired(&self) -> bool {
        ticks() >= self.0
    }
}

/// Busy-wait for `us` microseconds.
pub fn delay_us(us: u64) {
    let d = Deadline::after_us(us);
    while !d.expired() {
        core::hint::spin_loop();
    }
}
