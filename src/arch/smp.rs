//! Secondary CPUs: started with PSCI CPU_ON, each on its own stack with the
//! primary's MMU configuration, then idle until given a job (`run_on`).
//!
//! An idle secondary sleeps in WFI with IRQs masked (DAIF.I): a pending interrupt still
//! ends WFI, and `run_on` sends it `irq::SGI_WAKE` after posting the job. The SGI stays
//! pending until the CPU acknowledges it, so a job posted between its look and its WFI
//! is not missed. Without a GIC the CPU waits in WFE for SEV instead (which under QEMU
//! TCG does not sleep: the vCPU spins).

use super::exit::{Conduit, psci_conduit};
use super::timer::Deadline;
use crate::mm::{PAGE_SIZE, frames};
use alloc::boxed::Box;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
/// CPUs that idle in WFI and are woken by `irq::SGI_WAKE` (the others wait in WFE).
static WFI_MASK: AtomicUsize = AtomicUsize::new(0);
/// MPIDR affinity of each started CPU (the SGI target).
static MPIDRS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Times each CPU's idle loop came back from WFI/WFE (wake-ups, spurious ones included).
static IDLE_WAKES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Why a CPU could not take interrupts (it then waits in WFE).
static IRQ_PROBLEM: Mutex<[Option<crate::irq::IrqError>; MAX_CPUS]> = Mutex::new([const { None }; MAX_CPUS]);

#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The wake-up SGI could not be sent.
    Wake {
        cpu: usize,
        why: crate::irq::IrqError,
    },
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
            SmpError::Wake { cpu, why } => write!(f, "CPU {cpu}: wake-up SGI not sent: {why}"),
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
        MPIDRS[idx].store(mpidr & crate::irq::gic::MPIDR_AFF_MASK, Ordering::SeqCst);
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
    if sleeps_in_wfi(cpu) {
        // send_sgi orders the job's store before the SGI (DSB).
        if let Err(why) = crate::irq::send_sgi(crate::irq::SGI_WAKE, MPIDRS[cpu].load(Ordering::SeqCst)) {
            slot.job.lock().take();
            return Err(SmpError::Wake { cpu, why });
        }
    } else {
        // SAFETY: SEV only wakes CPUs waiting in WFE.
        unsafe { asm!("dsb ish", "sev", options(nostack)) };
    }
    Ok(ticket)
}

/// CPU `cpu` idles in WFI and is woken by an SGI (else it waits in WFE for SEV).
pub fn sleeps_in_wfi(cpu: usize) -> bool {
    cpu < MAX_CPUS && WFI_MASK.load(Ordering::SeqCst) & (1 << cpu) != 0
}

/// How often CPU `cpu`'s idle loop woke up so far (jobs, SGIs, spurious wake-ups).
pub fn idle_wakes(cpu: usize) -> u64 {
    IDLE_WAKES.get(cpu).map_or(0, |w| w.load(Ordering::SeqCst))
}

/// MPIDR affinity of started CPU `cpu` (0 for the boot CPU's slot and unknown ones).
pub fn mpidr_of(cpu: usize) -> u64 {
    MPIDRS.get(cpu).map_or(0, |m| m.load(Ordering::SeqCst))
}

/// How each secondary idles, for the boot log: "CPU 1 idles in WFI, woken by SGI 0",
/// or in a WFE loop and why.
pub fn idle_summary() -> alloc::vec::Vec<alloc::string::String> {
    let problems = IRQ_PROBLEM.lock();
    (1..MAX_CPUS)
        .filter(|&c| is_online(c))
        .map(|c| match (&problems[c], sleeps_in_wfi(c)) {
            (_, true) => alloc::format!("CPU {c} idles in WFI, woken by SGI {}", crate::irq::SGI_WAKE),
            (Some(e), false) => alloc::format!("CPU {c} idles in a WFE loop (no interrupts: {e})"),
            (None, false) => alloc::format!("CPU {c} idles in a WFE loop (interrupts are off)"),
        })
        .collect()
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

/// This CPU's index (0: the boot CPU; secondaries in the order `start_secondaries` started
/// them), kept in TPIDR_EL1.
pub fn this_cpu() -> usize {
    let v: u64;
    // SAFETY: reading TPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, tpidr_el1", out(reg) v, options(nomem, nostack)) };
    v as usize
}

fn set_this_cpu(idx: usize) {
    // SAFETY: TPIDR_EL1 is software's scratch register; only this module writes it.
    unsafe { asm!("msr tpidr_el1, {}", in(reg) idx as u64, options(nomem, nostack)) };
}

/// Mark the running CPU as the boot CPU (index 0): its TPIDR_EL1 is UNKNOWN at reset and
/// whatever the loader left.
pub fn init_boot_cpu() {
    set_this_cpu(0);
}

#[unsafe(no_mangle)]
extern "C" fn secondary_main(idx: usize) -> ! {
    set_this_cpu(idx);
    // Interrupts first (the wake-up mode must be known before run_on can see us online).
    let wfi = match crate::irq::init_this_cpu() {
        Ok(()) => true,
        Err(crate::irq::IrqError::NotReady) => false,
        Err(e) => {
            IRQ_PROBLEM.lock()[idx] = Some(e);
            false
        }
    };
    if wfi {
        WFI_MASK.fetch_or(1 << idx, Ordering::SeqCst);
    }
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
            None if wfi => {
                // SAFETY: WFI only waits; with DAIF.I set a pending IRQ ends it without
                // an exception, and service_pending acknowledges it (SGI_WAKE included).
                unsafe { asm!("wfi", options(nomem, nostack)) };
                crate::irq::service_pending();
                IDLE_WAKES[idx].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                // SAFETY: waiting for an event has no memory effects.
                unsafe { asm!("wfe", options(nomem, nostack)) };
                IDLE_WAKES[idx].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
