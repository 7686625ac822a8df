//! In-kernel test suites. They use the layers only through their public APIs and
//! report through the harness; `test=<filter>` on the command line picks a subset.

/// In a test: the value of `Ok`, or fail the test with `what: error`.
macro_rules! tri {
    ($e:expr, $what:literal) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::harness::Outcome::Fail(alloc::format!(concat!($what, ": {}"), e)),
        }
    };
}

/// In a test: the value of `Some`, or fail the test with `what`.
macro_rules! some {
    ($e:expr, $what:literal) => {
        match $e {
            Some(v) => v,
            None => return $crate::harness::Outcome::Fail(alloc::format!($what)),
        }
    };
}

mod boot;
mod dma;
mod irq;
mod leaks;
mod reliability;
mod smmu;
mod smp;
mod soak;
mod topology;
mod virtio;

use crate::bootargs::BootArgs;
use crate::dt::Platform;
use crate::harness::{self, Outcome, Summary};
use crate::kprintln;

/// What a test may look at.
pub struct Ctx<'a> {
    pub platform: &'a Platform,
    pub args: &'a BootArgs<'a>,
}

pub struct Test {
    pub suite: &'static str,
    pub name: &'static str,
    pub run: fn(&Ctx) -> Outcome,
}

/// Fail with a formatted reason unless `cond`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            return $crate::harness::Outcome::Fail(alloc::format!($($why)*));
        }
    };
}

fn all() -> impl Iterator<Item = &'static Test> {
    // `leaks` checks what every other suite gave back: keep it last.
    boot::TESTS
        .iter()
        .chain(smmu::TESTS.iter())
        .chain(dma::TESTS.iter())
        .chain(reliability::TESTS.iter())
        .chain(virtio::TESTS.iter())
        .chain(smp::TESTS.iter())
        .chain(soak::TESTS.iter())
        .chain(topology::TESTS.iter())
        .chain(irq::TESTS.iter())
        .chain(leaks::TESTS.iter())
}

/// `crash=<kind>` proves the fatal paths print and stop with a failure status.
fn crash(kind: &str) {
    kprintln!("crashing on purpose: crash={kind}");
    match kind {
        // The upper half has no translation (TCR_EL1.EPD1): a translation fault.
        "data-abort" => {
            // SAFETY: deliberately faulting read; the handler reports and exits.
            let v = unsafe { core::ptr::read_volatile(0xffff_8000_dead_0000 as *const u64) };
            kprintln!("read {v:#x}?!");
        }
        // SAFETY: deliberately undefined instruction; the handler reports and exits.
        "undef" => unsafe { core::arch::asm!("udf #0x42") },
        "panic" => panic!("crash=panic was requested"),
        other => kprintln!("unknown crash kind \"{other}\" (data-abort, undef, panic)"),
    }
}

/// Spin (bounded) until `f` holds; true if it did.
pub(super) fn wait_until(ms: u64, f: impl Fn() -> bool) -> bool {
    let d = crate::arch::timer::Deadline::after_ms(ms);
    while !f() {
        if d.expired() {
            return f();
        }
        core::hint::spin_loop();
    }
    true
}

pub fn run(platform: &Platform, args: &BootArgs) -> Summary {
    if let Some(kind) = args.get("crash") {
        crash(kind);
    }
    let filter = args.get("test").unwrap_or("");
    let ctx = Ctx { platform, args };
    let mut summary = Summary::default();
    leaks::snapshot();
    kprintln!(
        "== running tests{} ==",
        if filter.is_empty() { alloc::string::String::new() } else { alloc::format!(" matching \"{filter}\"") }
    );
    for t in all() {
        let full = alloc::format!("{}::{}", t.suite, t.name);
        if !harness::matches(filter, &full) {
            continue;
        }
        let o = (t.run)(&ctx);
        kprintln!("{}", harness::result_line(t.suite, t.name, &o));
        summary.add(&o);
    }
    summary
}
