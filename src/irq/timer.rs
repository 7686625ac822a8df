//! The EL1 physical timer (CNTP_*_EL0) as an interrupt source: the architected
//! Non-secure physical timer raises PPI 14, INTID 30, level-sensitive.

use core::arch::asm;

/// INTID of the EL1 physical timer.
pub const INTID: u32 = 30;

const CTL_ENABLE: u64 = 1 << 0;
const CTL_IMASK: u64 = 1 << 1;
const CTL_ISTATUS: u64 = 1 << 2;

/// Fire once `ticks` counter ticks from now (the line stays asserted until re-armed
/// or disarmed).
pub fn arm_ticks(ticks: u64) {
    let tval = ticks.min(i32::MAX as u64);
    // SAFETY: CNTP_TVAL_EL0/CNTP_CTL_EL0 are accessible at EL1 (CNTHCTL_EL2.EL1PCEN is
    // set by entry.S when we came from EL2); writing them only affects the timer.
    unsafe {
        asm!("msr cntp_tval_el0, {}", in(reg) tval, options(nomem, nostack));
        asm!("msr cntp_ctl_el0, {}", "isb", in(reg) CTL_ENABLE, options(nomem, nostack));
    }
}

/// Fire `us` microseconds from now.
pub fn arm_us(us: u64) {
    arm_ticks((us as u128 * crate::arch::timer::freq() as u128 / 1_000_000) as u64);
}

/// Stop the timer and drop its interrupt line.
pub fn disarm() {
    // SAFETY: as in arm_ticks.
    unsafe { asm!("msr cntp_ctl_el0, {}", "isb", in(reg) CTL_IMASK, options(nomem, nostack)) };
}

/// The timer condition is met (ISTATUS): the line is asserted unless masked.
pub fn condition_met() -> bool {
    let v: u64;
    // SAFETY: reading CNTP_CTL_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntp_ctl_el0", out(reg) v, options(nomem, nostack)) };
    v & CTL_ISTATUS != 0
}
