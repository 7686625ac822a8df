//! CPU architecture support for AArch64: exception vectors, MMU, caches, timer,
//! PSCI and the exit path. Only this module and the drivers touch system registers.

pub mod cache;
pub mod exceptions;
pub mod exit;
pub mod irqlock;
pub mod mmu;
pub mod smp;
pub mod timer;

use core::arch::asm;

/// Current exception level (1 or 2).
pub fn current_el() -> u8 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack)) };
    ((el >> 2) & 3) as u8
}

/// MIDR_EL1: who made this CPU and which part it is.
pub fn midr() -> u64 {
    let v: u64;
    // SAFETY: reading MIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, midr_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// MPIDR_EL1 affinity of this CPU.
pub fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// Readable CPU name from MIDR_EL1 (the parts a board is likely to have).
pub fn cpu_name(midr: u64) -> &'static str {
    let implementer = (midr >> 24) & 0xff;
    let part = (midr >> 4) & 0xfff;
    match (implementer, part) {
        (0x41, 0xd03) => "Cortex-A53",
        (0x41, 0xd04) => "Cortex-A35",
        (0x41, 0xd05) => "Cortex-A55",
        (0x41, 0xd07) => "Cortex-A57",
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd09) => "Cortex-A73",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd40) => "Neoverse-V1",
        (0x41, 0xd41) => "Cortex-A78",
        (0x41, 0xd46) => "Cortex-A510",
        (0x41, 0xd47) => "Cortex-A710",
        (0x41, 0xd49) => "Neoverse-N2",
        (0x41, 0xd4d) => "Cortex-A715",
        (0x41, 0xd4f) => "Neoverse-V2",
        (0x41, 0xd80) => "Cortex-A520",
        (0x41, 0xd81) => "Cortex-A720",
        (0x41, _) => "Arm (unknown part)",
        (0x00, 0x051) => "QEMU max",
        _ => "unknown",
    }
}

/// Mask (true) or unmask IRQs on this CPU; returns the previous mask state.
pub fn irqs_masked() -> bool {
    let daif: u64;
    // SAFETY: reading DAIF has no side effects.
    unsafe { asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack)) };
    daif & (1 << 7) != 0
}

/// Mask IRQs on this CPU; returns whether they were masked already (for
/// [`local_irq_restore`]). A compiler barrier too (no `nomem`): memory accesses after it
/// stay after it, so a lock taken next is taken with IRQs masked.
pub fn local_irq_save() -> bool {
    let was = irqs_masked();
    // SAFETY: masking IRQs on this CPU only delays interrupts.
    unsafe { asm!("msr daifset, #2", "isb", options(nostack)) };
    was
}

/// Undo [`local_irq_save`]: unmask IRQs unless they were masked before it. A compiler
/// barrier too: memory accesses before it (a lock's release) stay before it.
pub fn local_irq_restore(was_masked: bool) {
    if !was_masked {
        // SAFETY: restores the state `local_irq_save` found.
        unsafe { asm!("msr daifclr, #2", "isb", options(nostack)) };
    }
}

/// Run `f` with IRQs masked on this CPU (restoring the previous state), e.g. to let
/// a queue fill up without its interrupt handler draining it.
pub fn without_irqs<R>(f: impl FnOnce() -> R) -> R {
    let was = local_irq_save();
    let r = f();
    local_irq_restore(was);
    r
}
