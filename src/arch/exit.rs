//! Leaving the machine: semihosting SYS_EXIT carries the status to QEMU's exit code
//! when semihosting is enabled; otherwise PSCI SYSTEM_OFF (the runner then reads the
//! closing line). Semihosting is probed safely: without it, HLT #0xF000 is an
//! undefined instruction, which the exception handler recognises and skips.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

global_asm!(".section .text.semihost, \"ax\"", ".global semihost_trap", "semihost_trap:", "    hlt #0xf000", "    ret",);

unsafe extern "C" {
    /// Semihosting call: x0 = operation, x1 = parameter; returns x0.
    fn semihost_trap(op: u64, arg: u64) -> u64;
}

/// Set by the exception handler when the semihosting trap proved undefined.
static SEMIHOSTING_ABSENT: AtomicBool = AtomicBool::new(false);

/// The value a skipped semihosting call returns.
pub const SEMIHOST_UNAVAILABLE: u64 = u64::MAX - 0x5e;

/// Address of the semihosting HLT instruction (for the exception handler).
pub fn semihost_trap_addr() -> u64 {
    semihost_trap as *const () as usize as u64
}

/// Called by the exception handler when the trap was undefined.
pub fn mark_semihosting_absent() {
    SEMIHOSTING_ABSENT.store(true, Ordering::Relaxed);
}

/// PSCI conduit from the device tree: 0 none, 1 HVC, 2 SMC.
static PSCI_CONDUIT: AtomicU8 = AtomicU8::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

pub fn set_psci_conduit(c: Option<Conduit>) {
    let v = match c {
        None => 0,
        Some(Conduit::Hvc) => 1,
        Some(Conduit::Smc) => 2,
    };
    PSCI_CONDUIT.store(v, Ordering::Relaxed);
}

pub fn psci_conduit() -> Option<Conduit> {
    match PSCI_CONDUIT.load(Ordering::Relaxed) {
        1 => Some(Conduit::Hvc),
        2 => Some(Conduit::Smc),
        _ => None,
    }
}

/// Whether semihosting answered (false until the first call tried it).
pub fn semihosting_available() -> bool {
    !SEMIHOSTING_ABSENT.load(Ordering::Relaxed)
}

/// Console of last resort: SYS_WRITE0 to the debugger/QEMU when no UART is usable.
/// Does nothing once semihosting proved absent.
pub fn semihost_write(s: &str) {
    if SEMIHOSTING_ABSENT.load(Ordering::Relaxed) {
        return;
    }
    let mut buf = [0u8; 128];
    for chunk in s.as_bytes().chunks(buf.len() - 1) {
        buf[..chunk.len()].copy_from_slice(chunk);
        buf[chunk.len()] = 0;
        // SAFETY: SYS_WRITE0 (0x04) reads the NUL-terminated string we pass; if
        // semihosting is absent the handler skips the HLT.
        unsafe { semihost_trap(0x04, buf.as_ptr() as u64) };
        if SEMIHOSTING_ABSENT.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Stop the machine with `code` (0 = success).
pub fn exit(code: u32) -> ! {
    if !SEMIHOSTING_ABSENT.load(Ordering::Relaxed) {
        // ADP_Stopped_ApplicationExit with the exit status (AArch64 parameter block).
        let block: [u64; 2] = [0x20026, code as u64];
        // SAFETY: SYS_EXIT (0x18) reads the two-word block we pass; if semihosting is
        // absent the exception handler skips the HLT and returns SEMIHOST_UNAVAILABLE.
        unsafe { semihost_trap(0x18, block.as_ptr() as u64) };
    }
    match psci_conduit() {
        Some(Conduit::Hvc) => {
            let _ = smccc::psci::system_off::<smccc::Hvc>();
        }
        Some(Conduit::Smc) => {
            let _ = smccc::psci::system_off::<smccc::Smc>();
        }
        None => {}
    }
    crate::console::write_raw("halted: no semihosting and no PSCI to power off\n");
    loop {
        // SAFETY: waiting for an event has no memory effects.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}
