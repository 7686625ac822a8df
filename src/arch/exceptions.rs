//! Exception entry from the vectors: report what happened and stop, except for the
//! few exceptions the kernel expects (semihosting probe, test-provoked BRKs, IRQs).

use core::sync::atomic::{AtomicU64, Ordering};

/// Register frame saved by `vectors.S` (must match its layout).
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    _pad: u64,
}

const KIND: [&str; 4] = ["Synchronous", "IRQ", "FIQ", "SError"];
const ORIGIN: [&str; 4] = ["EL1t", "EL1h", "lower EL AArch64", "lower EL AArch32"];

/// Name of an exception class (ESR_ELx.EC).
pub fn ec_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "Unknown reason (undefined instruction)",
        0x01 => "WFI/WFE trapped",
        0x07 => "FP/SIMD access trapped",
        0x0e => "Illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "MSR/MRS/system instruction trapped",
        0x20 => "Instruction abort from lower EL",
        0x21 => "Instruction abort",
        0x22 => "PC alignment fault",
        0x24 => "Data abort from lower EL",
        0x25 => "Data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Interrupt handler hook installed by the interrupt layer.
static IRQ_HANDLER: AtomicU64 = AtomicU64::new(0);

pub fn set_irq_handler(f: fn()) {
    IRQ_HANDLER.store(f as usize as u64, Ordering::SeqCst);
}

/// A test may arm an expected BRK: the handler records the ESR and resumes after it.
static EXPECTED_BRK: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST_BRK_ESR: AtomicU64 = AtomicU64::new(0);

/// Execute `brk #imm`-style trap under test: returns the ESR the handler saw.
pub fn provoke_brk() -> Option<u64> {
    EXPECTED_BRK.store(0x7e57, Ordering::SeqCst);
    LAST_BRK_ESR.store(0, Ordering::SeqCst);
    // SAFETY: the handler recognises the armed BRK #0x7e57 and resumes after it.
    unsafe { core::arch::asm!("brk #0x7e57") };
    EXPECTED_BRK.store(u64::MAX, Ordering::SeqCst);
    match LAST_BRK_ESR.load(Ordering::SeqCst) {
        0 => None,
        e => Some(e),
    }
}

#[unsafe(no_mangle)]
extern "C" fn exception_entry(frame: &mut TrapFrame, kind: u64) {
    let ec = (frame.esr >> 26) & 0x3f;
    let sync = kind.is_multiple_of(4);
    if sync && ec == 0 && frame.elr == super::exit::semihost_trap_addr() {
        super::exit::mark_semihosting_absent();
        frame.x[0] = super::exit::SEMIHOST_UNAVAILABLE;
        frame.elr += 4;
        return;
    }
    if sync && ec == 0x3c && (frame.esr & 0xffff) == EXPECTED_BRK.load(Ordering::SeqCst) {
        LAST_BRK_ESR.store(frame.esr, Ordering::SeqCst);
        frame.elr += 4;
        return;
    }
    if kind % 4 == 1 {
        let h = IRQ_HANDLER.load(Ordering::SeqCst);
        if h != 0 {
            // SAFETY: the only values stored are `fn()` pointers from set_irq_handler.
            let f: fn() = unsafe { core::mem::transmute(h as usize) };
            f();
            return;
        }
    }
    use crate::console::RawWriter;
    use core::fmt::Write;
    let mut w = RawWriter;
    let _ = writeln!(
        w,
        "\n*** EXCEPTION: {} from {} — {} (EC {:#x})",
        KIND[(kind % 4) as usize],
        ORIGIN[((kind / 4) % 4) as usize],
        ec_name(ec),
        ec
    );
    let _ = writeln!(
        w,
        "    ESR {:#018x}  FAR {:#018x}  ELR {:#018x}  SPSR {:#x}",
        frame.esr, frame.far, frame.elr, frame.spsr
    );
    if ec == 0x25 || ec == 0x24 {
        let dfsc = frame.esr & 0x3f;
        let wnr = (frame.esr >> 6) & 1;
        let _ = writeln!(w, "    data abort: DFSC {dfsc:#x}, {}", if wnr == 1 { "write" } else { "read" });
    }
    let _ = writeln!(w, "    LR  {:#018x}  FP  {:#018x}", frame.x[30], frame.x[29]);
    crate::console::backtrace(&mut w, frame.x[29]);
    let _ = writeln!(w, "{}", crate::harness::ABORT_LINE);
    super::exit::exit(3);
}
