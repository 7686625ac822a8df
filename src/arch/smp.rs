//! Secondary CPUs: started with PSCI CPU_ON, each on its own stack with the
//! primary's MMU configuration, then parked waiting for jobs (`run_on`).

use super::exit::{Conduit, psci_conduit};
use super::timer::Deadline;
use crate::mm::{PAGE_SIZE, frames};
use alloc::boxed::Box;
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Mutex;

pub const MAX_CPUS: usize = 8;
const STACK_PAGES: usize = 16;

/// Read by `secondary_entry` with the MMU off: MAIR, TCR, TTBR0, SCTLR bits to set,
/// then one stack top per CPU index.
#[unsafe(no_mangle)]
static mut smp_boot_args: [u64; 4 + MAX_CPUS] = [0; 4 + MAX_CPUS];

unsafe extern "C" {
    fn secondary_entry();
}

type Job = Box<dyn FnOnce() + Send>;

struct Slot {
    job: Mutex<Option<Job>>,
    /// Jobs finished on this CPU (the submitter waits for it to advance).
    done: AtomicUsize,
}

static SLOTS: [Slot; MAX_CPUS] = [const { Slot { job: Mutex::new(None), done: AtomicUsize::new(0) } }; MAX_CPUS];
static ONLINE: AtomicUsize = AtomicUsize::new(1);
static ONLINE_MASK: AtomicUsize = AtomicUsize::new(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmpError {
    NoPsci,
    NoMemory,
    /// CPU_ON returned an error code.
    CpuOn {
        mpidr: u64,
        code: i32,
    },
    /// The CPU did not report in within the bound.
    Timeout {
        cpu: usize,
    },
    NotOnline(usize),
    Busy(usize),
}

impl core::fmt::Display for SmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmpError::NoPsci => write!(f, "no PSCI conduit in the device tree"),
            SmpError::NoMemory => write!(f, "no memory for a stack"),
            SmpError::CpuOn { mpidr, code } => write!(f, "CPU_ON({mpidr:#x}) failed with PSCI error {code}"),
            SmpError::Timeout { cpu } => write!(f, "CPU {cpu} did not come online / finish in time"),
            SmpError::NotOnline(c) => write!(f, "CPU {c} is not online"),
            SmpError::Busy(c) => write!(f, "CPU {c} is still running a job"),
        }
    }
}

fn sysreg_mair_tcr_ttbr() -> (u64, u64, u64) {
    let (m, t, b): (u64, u64, u64);
    // SAFETY: reading translation registers has no side effects.
    unsafe {
        asm!("mrs {}, mair_el1", "mrs {}, tcr_el1", "mrs {}, ttbr0_el1", out(reg) m, out(reg) t, out(reg) b,
             options(nomem, nostack))
    };
    (m, t, b)
}

/// Start every CPU of `mpidrs` except the one running this. Returns how many came online.
pub fn start_secondaries(mpidrs: &[u64]) -> Result<usize, SmpError> {
    let conduit = psci_conduit().ok_or(SmpError::NoPsci)?;
    let me = super::mpidr() & 0xff_00ff_ffff;
    let (mair, tcr, ttbr) = sysreg_mair_tcr_ttbr();
    let mut started = 0;
    for (idx, &mpidr) in mpidrs.iter().enumerate().take(MAX_CPUS) {
        if mpidr == me || idx == 0 && mpidr == 0 && me == 0 {
            continue;
        }
        let stack = frames::alloc_zeroed(STACK_PAGES).ok_or(SmpError::NoMemory)?;
        let args = &raw mut smp_boot_args;
        // SAFETY: only the primary writes smp_boot_args, before starting the CPU
        // that reads it; the CPU reads it with its MMU off, hence the clean below.
        unsafe {
            (*args)[0] = mair;
            (*args)[1] = tcr;
            (*args)[2] = ttbr;
            (*args)[3] = (1 << 0) | (1 << 2) | (1 << 12);
            (*args)[4 + idx] = stack + (STACK_PAGES as u64) * PAGE_SIZE;
        }
        super::cache::clean(args as usize, core::mem::size_of::<[u64; 4 + MAX_CPUS]>());
        let entry = secondary_entry as *const () as u64;
        let r = match conduit {
            Conduit::Hvc => smccc::psci::cpu_on::<smccc::Hvc>(mpidr, entry, idx as u64),
            Conduit::Smc => smccc::psci::cpu_on::<smccc::Smc>(mpidr, entry, idx as u64),
        };
        if let Err(e) = r {
            return Err(SmpError::CpuOn { mpidr, code: psci_code(e) });
        }
        let d = Deadline::after_ms(2000);
        while ONLINE_MASK.load(Ordering::SeqCst) & (1 << idx) == 0 {
            if d.expired() {
                return Err(SmpError::Timeout { cpu: idx });
            }
            core::hint::spin_loop();
        }
        started += 1;
    }
    Ok(started)
}

fn psci_code(e: smccc::psci::error::Error) -> i32 {
    match e {
        smccc::psci::error::Error::NotSupported => -1,
        smccc::psci::error::Error::InvalidParameters => -2,
        smccc::psci::error::Error::Denied => -3,
        smccc::psci::error::Error::AlreadyOn => -4,
        smccc::psci::error::Error::OnPending => -5,
        smccc::psci::error::Error::InternalFailure => -6,
        _ => -99,
    }
}

pub fn online() -> usize {
    ONLINE.load(Ordering::SeqCst)
}

pub fn is_online(cpu: usize) -> bool {
    cpu < MAX_CPUS && ONLINE_MASK.load(Ordering::SeqCst) & (1 << cpu) != 0
}

/// Give CPU `cpu` a job; returns the done-count to wait for.
pub fn run_on(cpu: usize, job: Job) -> Result<usize, SmpError> {
    if cpu == 0 || !is_online(cpu) {
        return Err(SmpError::NotOnline(cpu));
    }
    let slot = &SLOTS[cpu];
    let mut j = slot.job.lock();
    if j.is_some() {
        return Err(SmpError::Busy(cpu));
    }
    let ticket = slot.done.load(Ordering::SeqCst) + 1;
    *j = Some(job);
    drop(j);
    // SAFETY: SEV only wakes CPUs waiting in WFE.
    unsafe { asm!("dsb ish", "sev", options(nostack)) };
    Ok(ticket)
}

/// Wait (bounded) until CPU `cpu` finished the job `ticket` came from.
pub fn wait(cpu: usize, ticket: usize, timeout_ms: u64) -> Result<(), SmpError> {
    let d = Deadline::after_ms(timeout_ms);
    while SLOTS[cpu].done.load(Ordering::SeqCst) < ticket {
        if d.expired() {
            return Err(SmpError::Timeout { cpu });
        }
        core::hint::spin_loop();
    }
    Ok(())
}

#[unsafe(no_mangle)]
extern "C" fn secondary_main(idx: usize) -> ! {
    ONLINE.fetch_add(1, Ordering::SeqCst);
    ONLINE_MASK.fetch_or(1 << idx, Ordering::SeqCst);
    let slot = &SLOTS[idx];
    loop {
        let job = slot.job.lock().take();
        match job {
            Some(j) => {
                j();
                slot.done.fetch_add(1, Ordering::SeqCst);
            }
            // SAFETY: waiting for an event has no memory effects.
            None => unsafe { asm!("wfe", options(nomem, nostack)) },
        }
    }
}
