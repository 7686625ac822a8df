//! Boot suite: entry level, relocation, MMU and caches, vectors, memory, timer.

use super::{Ctx, Test};
use crate::arch::{self, exceptions, mmu, timer};
use crate::bootargs::parse_u64;
use crate::ensure;
use crate::harness::Outcome;
use crate::mm::frames;
use alloc::vec::Vec;

pub static TESTS: &[Test] = &[
    Test { suite: "boot", name: "entry_el", run: entry_el },
    Test { suite: "boot", name: "relocated", run: relocated },
    Test { suite: "boot", name: "mmu_and_caches", run: mmu_and_caches },
    Test { suite: "boot", name: "exception_vectors", run: exception_vectors },
    Test { suite: "boot", name: "heap", run: heap },
    Test { suite: "boot", name: "page_frames", run: page_frames },
    Test { suite: "boot", name: "timer", run: timer_runs },
    Test { suite: "boot", name: "device_tree", run: device_tree },
];

fn entry_el(c: &Ctx) -> Outcome {
    let bi = crate::boot_info();
    ensure!(arch::current_el() == 1, "running at EL{}, expected EL1", arch::current_el());
    if let Some(want) = c.args.get("expect.el") {
        ensure!(
            want == alloc::format!("{}", bi.entry_el),
            "entered at EL{}, the runner expected EL{want}",
            bi.entry_el
        );
    }
    Outcome::Pass
}

static SELF_PTR: &fn(&Ctx) -> Outcome = &(relocated as fn(&Ctx) -> Outcome);

fn relocated(c: &Ctx) -> Outcome {
    let bi = crate::boot_info();
    ensure!(bi.unsupported_relocs == 0, "{} relocations of an unsupported type", bi.unsupported_relocs);
    ensure!(bi.load_addr.is_multiple_of(2 << 20), "load address {:#x} is not 2 MiB aligned", bi.load_addr);
    // A function pointer stored in static data is only right if relocation ran.
    let stored = *SELF_PTR as usize;
    let actual = relocated as fn(&Ctx) -> Outcome as usize;
    ensure!(stored == actual, "static fn pointer {stored:#x} != {actual:#x}");
    ensure!(
        stored as u64 >= bi.load_addr && (stored as u64) < bi.load_addr + bi.image_size,
        "fn pointer {stored:#x} outside the image at {:#x}",
        bi.load_addr
    );
    if let Some(want) = c.args.get("expect.load") {
        ensure!(parse_u64(want) == Some(bi.load_addr), "loaded at {:#x}, expected {want}", bi.load_addr);
    }
    Outcome::Pass
}

fn mmu_and_caches(c: &Ctx) -> Outcome {
    ensure!(mmu::mmu_enabled(), "SCTLR_EL1.M is clear");
    let stack_var = 0u64;
    let ram_attr = mmu::attr_of(&stack_var as *const u64 as u64);
    ensure!(ram_attr == Some(0xff), "stack is not normal write-back memory: attr {ram_attr:?}");
    let heap_box = alloc::boxed::Box::new(0u64);
    let heap_attr = mmu::attr_of(&*heap_box as *const u64 as u64);
    ensure!(heap_attr == Some(0xff), "heap is not normal write-back memory: attr {heap_attr:?}");
    if let Some(con) = &c.platform.console {
        let a = mmu::attr_of(con.base);
        ensure!(a == Some(0x04), "console registers at {:#x} are not device memory: attr {a:?}", con.base);
    }
    Outcome::Pass
}

fn exception_vectors(_: &Ctx) -> Outcome {
    match exceptions::provoke_brk() {
        Some(esr) => {
            ensure!(esr >> 26 == 0x3c, "ESR {esr:#x} is not a BRK");
            Outcome::Pass
        }
        None => Outcome::Fail("the BRK never reached the handler".into()),
    }
}

fn heap(_: &Ctx) -> Outcome {
    let v: Vec<u64> = (0..(1 << 17)).collect();
    ensure!(v.iter().sum::<u64>() == (1u64 << 17) * ((1 << 17) - 1) / 2, "heap data corrupted");
    Outcome::Pass
}

fn page_frames(_: &Ctx) -> Outcome {
    let (before, total) = frames::stats();
    ensure!(total > 0, "no page frames were given to the allocator");
    let Some(pa) = frames::alloc_zeroed(16) else {
        return Outcome::Fail("could not allocate 16 pages".into());
    };
    ensure!(pa % (16 * 4096) == 0, "16-page block at {pa:#x} is not 64 KiB aligned");
    // SAFETY: the 16 pages were just allocated to this test and are identity-mapped.
    let s = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, 16 * 4096) };
    ensure!(s.iter().all(|&b| b == 0), "frames are not zeroed");
    s.fill(0xa5);
    frames::free(pa, 16);
    let (after, _) = frames::stats();
    ensure!(after == before, "free pages {after} after free, {before} before");
    Outcome::Pass
}

fn timer_runs(_: &Ctx) -> Outcome {
    let t0 = timer::ticks();
    timer::delay_us(1000);
    let dt = timer::ticks_to_us(timer::ticks() - t0);
    ensure!(dt >= 1000, "1 ms delay took {dt} us");
    Outcome::Pass
}

fn device_tree(c: &Ctx) -> Outcome {
    let p = c.platform;
    ensure!(!p.memory.is_empty(), "no memory node");
    ensure!(p.console.is_some(), "no console");
    ensure!(p.gic.is_some(), "no GIC");
    ensure!(p.errors.is_empty(), "device tree errors: {:?}", p.errors);
    if let Some(n) = c.args.get("expect.smmus") {
        let enabled = p.smmus.iter().filter(|s| s.enabled).count();
        ensure!(alloc::format!("{enabled}") == n, "{enabled} enabled SMMUs in the DT, expected {n}");
    }
    Outcome::Pass
}
