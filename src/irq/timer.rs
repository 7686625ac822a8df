//! The EL1 generic timers as interrupt sources: the Non-secure physical timer
//! (CNTP_*_EL0) and the virtual timer (CNTV_*_EL0), at the PPIs the DT's timer node names
//! (the Arm BSA's 30 and 27 when it names none usable).

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};

use super::{BSA_TIMER_INTIDS, TimerIntids};

/// One of the two EL1 timers. Each CPU has its own of each; its interrupt is a PPI,
/// level-sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Left to tests and whoever needs a timer of their own.
    Physical,
    /// The kernel's deferred work (the DMA API's lazy-flush timeout).
    Virtual,
}

static PHYS_INTID: AtomicU32 = AtomicU32::new(BSA_TIMER_INTIDS.phys);
static VIRT_INTID: AtomicU32 = AtomicU32::new(BSA_TIMER_INTIDS.virt);

/// Take the timers' INTIDs from the DT (before any timer handler is registered); returns
/// a line for the boot log saying where they came from.
pub fn configure(p: &crate::dt::Platform) -> alloc::string::String {
    use alloc::format;
    let found = match (&p.timer, &p.gic) {
        (Some(t), Some(g)) => super::timer_intids(t, g).map(|i| (i, t.node.as_str())),
        (None, _) => Err("no arm,armv8-timer node".into()),
        (_, None) => Err("no GIC".into()),
    };
    let (TimerIntids { phys, virt }, from) = match &found {
        Ok((i, node)) => (*i, format!("from {node}")),
        Err(why) => (BSA_TIMER_INTIDS, format!("the Arm BSA's ({why})")),
    };
    PHYS_INTID.store(phys, Ordering::SeqCst);
    VIRT_INTID.store(virt, Ordering::SeqCst);
    format!("physical INTID {phys}, virtual INTID {virt}, {from}")
}

const CTL_ENABLE: u64 = 1 << 0;
const CTL_IMASK: u64 = 1 << 1;
const CTL_ISTATUS: u64 = 1 << 2;

impl Timer {
    pub fn intid(self) -> u32 {
        match self {
            Timer::Physical => PHYS_INTID.load(Ordering::Relaxed),
            Timer::Virtual => VIRT_INTID.load(Ordering::Relaxed),
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

/// INTID of the EL1 physical timer.
pub fn intid() -> u32 {
    Timer::Physical.intid()
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
