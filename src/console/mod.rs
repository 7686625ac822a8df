//! The console: a UART chosen from `/chosen/stdout-path`, behind one lock.
//! Fatal paths (panic, exceptions) write without the lock so they always get out.

mod pl011;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

pub use pl011::Pl011;

/// Base address and kind of the active UART. Plain atomics (no read-modify-write)
/// so they work before the MMU is on, when exclusive accesses may not.
static BASE: AtomicU64 = AtomicU64::new(0);
static KIND: AtomicU8 = AtomicU8::new(0);
/// Set once the MMU is on and spin locks are safe to use.
static LOCKING: AtomicBool = AtomicBool::new(false);
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    None = 0,
    Pl011 = 1,
}

/// Use the UART at `base` from now on.
pub fn set_uart(kind: UartKind, base: u64) {
    BASE.store(base, Ordering::SeqCst);
    KIND.store(kind as u8, Ordering::SeqCst);
}

pub fn uart() -> (UartKind, u64) {
    let k = match KIND.load(Ordering::SeqCst) {
        1 => UartKind::Pl011,
        _ => UartKind::None,
    };
    (k, BASE.load(Ordering::SeqCst))
}

pub fn enable_locking() {
    LOCKING.store(true, Ordering::SeqCst);
}

fn put_str(s: &str) {
    let (kind, base) = uart();
    if kind == UartKind::Pl011 {
        // SAFETY: `base` came from the device tree's console node and is mapped
        // as device memory; PL011 registers are valid for the UART's lifetime.
        let u = unsafe { Pl011::new(base as usize) };
        for b in s.bytes() {
            if b == b'\n' {
                u.put(b'\r');
            }
            u.put(b);
        }
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
