//! Panics print where and why, a backtrace, and stop the machine with a failure.

use core::fmt::Write;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut w = crate::console::RawWriter;
    let _ = writeln!(w, "\n*** PANIC: {}", info.message());
    if let Some(loc) = info.location() {
        let _ = writeln!(w, "    at {}:{}:{}", loc.file(), loc.line(), loc.column());
    }
    let fp: u64;
    // SAFETY: reading the frame pointer register has no side effects.
    unsafe { core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack)) };
    crate::console::backtrace(&mut w, fp);
    let _ = writeln!(w, "{}", crate::harness::ABORT_LINE);
    crate::arch::exit::exit(2)
}
