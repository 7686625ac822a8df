//! The EL1 generic timers as interrupt sources: the Non-secure physical timer
//! (CNTP_*_EL0, PPI INTID 30) and the virtual timer (CNTV_*_EL0, PPI INTID 27).

use core::arch::asm;

/// One of the two EL1 timers. Each CPU has its own of each; its interrupt is a PPI,
/// level-sensitive, at the INTID the Arm BSA assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Left to tests and whoever needs a timer of their own.
    Physical,
    /// The kernel's deferred work (the DMA API's lazy-flush timeout).
    Virtual,
}

/// INTID of the EL1 physical timer.
pub const INTID: u32 = Timer::Physical.intid();

const CTL_ENABLE: u64 = 1 << 0;
const CTL_IMASK: u64 = 1 << 1;
const CTL_ISTATUS: u64 = 1 << 2;

impl Timer {
    pub const fn intid(self) -> u32 {
        match self {
            Timer::Physical => 30,
            Timer::Virtual => 27,
        }
    }

    /// Fire once `ticks` counter ticks from now (the line stays asserted until re-armed
    /// or disarmed).
    pub fn arm_ticks(self, ticks: u64) {
        let tval = ticks.min(i32::MAX as u64);
        // SAFETY: CNTP_* and CNTV_* are accessible at EL1 (CNTHCTL_EL2.EL1PCEN is set by
        // entry.S when we came from EL2, CNTV needs nothing); writing them only affects
        // this CPU's timer.
        unsafe {
            match self {
                Timer::Physical => {
                    asm!("msr cntp_tval_el0, {}", in(reg) tval, options(nomem, nostack));
                    asm!("msr cntp_ctl_el0, {}", "isb", in(reg) CTL_ENABLE, options(nomem, nostack));
                }
                Timer::Virtual => {
                    asm!("msr cntv_tval_el0, {}", in(reg) tval, options(nomem, nostack));
                    asm!("msr cntv_ctl_el0, {}", "isb", in(reg) CTL_ENABLE, options(nomem, nostack));
                }
            }
        }
    }

    /// Fire `us` microseconds from now.
    pub fn arm_us(self, us: u64) {
        self.arm_ticks((us as u128 * crate::arch::timer::freq() as u128 / 1_000_000) as u64);
    }

    /// Stop the timer and drop its interrupt line.
    pub fn disarm(self) {
        // SAFETY: as in arm_ticks.
        unsafe {
            match self {
                Timer::Physical => asm!("msr cntp_ctl_el0, {}", "isb", in(reg) CTL_IMASK, options(nomem, nostack)),
                Timer::Virtual => asm!("msr cntv_ctl_el0, {}", "isb", in(reg) CTL_IMASK, options(nomem, nostack)),
            }
        }
    }

    /// The timer condition is met (ISTATUS): the line is asserted unless masked.
    pub fn condition_met(self) -> bool {
        let v: u64;
        // SAFETY: reading CNTP_CTL_EL0/CNTV_CTL_EL0 has no side effects.
        unsafe {
            match self {
                Timer::Physical => asm!("mrs {}, cntp_ctl_el0", out(reg) v, options(nomem, nostack)),
                Timer::Virtual => asm!("mrs {}, cntv_ctl_el0", out(reg) v, options(nomem, nostack)),
            }
        }
        v & CTL_ISTATUS != 0
    }
}

/// The physical timer: fire `us` microseconds from now.
pub fn arm_us(us: u64) {
    Timer::Physical.arm_us(us);
}

/// The physical timer: stop it and drop its line.
pub fn disarm() {
    Timer::Physical.disarm();
}

/// The physical timer's condition is met.
pub fn condition_met() -> bool {
    Timer::Physical.condition_met()
}
