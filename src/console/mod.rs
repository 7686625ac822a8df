//! The console: a UART chosen from `/chosen/stdout-path`, behind one lock.
//! Fatal paths (panic, exceptions) write without the lock so they always get out.

use crate::uart::{Io, Uart};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// The active UART: base address and kind. Plain atomics (no read-modify-write) so
/// they work before the MMU is on, when exclusive accesses may not.
static BASE: AtomicU64 = AtomicU64::new(0);
/// 0 none (semihosting if available), 1 PL011, 2 16550 (with SHIFT/WIDTH), 3 LPUART.
static KIND: AtomicU8 = AtomicU8::new(0);
static SHIFT: AtomicU8 = AtomicU8::new(0);
static WIDTH: AtomicU8 = AtomicU8::new(1);
/// Set once the MMU is on and spin locks are safe to use.
static LOCKING: AtomicBool = AtomicBool::new(false);
/// IRQ-safe, so an interrupt handler may print (the line waits for the interrupted one).
static LOCK: crate::arch::irqlock::IrqSpinLock<()> = crate::arch::irqlock::IrqSpinLock::new(());

/// UART registers at `base`. The 8250 family's layout depends on `reg-shift` and
/// `reg-io-width`, which a fixed typed register block cannot express, so access is
/// by offset here (volatile, sized), in this one place.
struct Mmio(usize);

impl Io for Mmio {
    fn read(&self, off: usize, width: u32) -> u32 {
        // SAFETY: `base` is the console UART from the device tree, mapped as device
        // memory; offsets stay within the window `Uart::span` names.
        unsafe {
            match width {
                1 => core::ptr::read_volatile((self.0 + off) as *const u8) as u32,
                _ => core::ptr::read_volatile((self.0 + off) as *const u32),
            }
        }
    }
    fn write(&self, off: usize, width: u32, v: u32) {
        // SAFETY: as for read.
        unsafe {
            match width {
                1 => core::ptr::write_volatile((self.0 + off) as *mut u8, v as u8),
                _ => core::ptr::write_volatile((self.0 + off) as *mut u32, v),
            }
        }
    }
}

/// Use `uart` at `base` from now on (None: no UART; semihosting output if present).
pub fn set_uart(uart: Option<Uart>, base: u64) {
    let (k, sh, w) = match uart {
        None => (0, 0, 1),
        Some(Uart::Pl011) => (1, 0, 4),
        Some(Uart::Ns16550 { shift, width }) => (2, shift as u8, width as u8),
        Some(Uart::Lpuart) => (3, 0, 4),
    };
    BASE.store(base, Ordering::SeqCst);
    SHIFT.store(sh, Ordering::SeqCst);
    WIDTH.store(w, Ordering::SeqCst);
    KIND.store(k, Ordering::SeqCst);
}

pub fn uart() -> (Option<Uart>, u64) {
    let u = match KIND.load(Ordering::SeqCst) {
        1 => Some(Uart::Pl011),
        2 => Some(Uart::Ns16550 {
            shift: SHIFT.load(Ordering::SeqCst) as u32,
            width: WIDTH.load(Ordering::SeqCst) as u32,
        }),
        3 => Some(Uart::Lpuart),
        _ => None,
    };
    (u, BASE.load(Ordering::SeqCst))
}

pub fn enable_locking() {
    LOCKING.store(true, Ordering::SeqCst);
}

fn put_str(s: &str) {
    match uart() {
        (Some(u), base) if base != 0 => {
            let io = Mmio(base as usize);
            for b in s.bytes() {
                if b == b'\n' {
                    u.put(&io, b'\r');
                }
                u.put(&io, b);
            }
        }
        _ => crate::arch::exit::semihost_write(s),
    }
}

/// Write without taking the console lock (fatal paths, early boot).
pub fn write_raw(s: &str) {
    put_str(s);
}

pub struct RawWriter;

impl Write for RawWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put_str(s);
        Ok(())
    }
}

struct Locked;

impl Write for Locked {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put_str(s);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    if LOCKING.load(Ordering::Relaxed) {
        let _g = LOCK.lock();
        let _ = Locked.write_fmt(args);
    } else {
        let _ = RawWriter.write_fmt(args);
    }
}

/// Walk the frame-pointer chain from `fp` and print return addresses.
pub fn backtrace(w: &mut dyn Write, mut fp: u64) {
    let _ = writeln!(w, "    backtrace (image loaded at {:#x}):", crate::boot_info().load_addr);
    for depth in 0..16 {
        if fp == 0 || !fp.is_multiple_of(16) || !crate::boot_info().in_ram(fp, 16) {
            break;
        }
        // SAFETY: fp is 16-byte aligned and inside RAM (checked above); a frame
        // record is two words {previous fp, return address}.
        let (next, lr) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
        if lr == 0 {
            break;
        }
        let off = lr.wrapping_sub(crate::boot_info().load_addr);
        let _ = writeln!(w, "      #{depth:<2} {lr:#018x}  (image+{off:#x})");
        fp = next;
    }
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => ($crate::console::_print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! kprintln {
    () => ($crate::kprint!("\n"));
    ($($arg:tt)*) => ($crate::console::_print(format_args!("{}\n", format_args!($($arg)*))));
}
