//! The kernel's boot story, start to finish: enter, relocate, turn the MMU on, read
//! the device tree, bring up memory and the console, report, run the tests, exit.
#![no_std]
#![no_main]

use core::arch::global_asm;
use kernel::arch::{self, mmu};
use kernel::bootargs::BootArgs;
use kernel::mm::layout::{self, Span};
use kernel::mm::{frames, heap};
use kernel::{boot, console, dt, kprintln, report, selftest};

global_asm!(include_str!("arch/aarch64/entry.S"));
global_asm!(include_str!("arch/aarch64/vectors.S"));

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Heap growth once RAM is known (the bootstrap arena only has to read the DT).
const HEAP_BYTES: u64 = 64 << 20;

/// Called by `entry.S` at EL1 with the MMU off, BSS zeroed and relocations applied.
#[unsafe(no_mangle)]
extern "C" fn kernel_entry(dtb: u64, load: u64, entry_el: u64, bad_relocs: u64) -> ! {
    // 1. What the loader gave us: the image span and the DTB span (its header says its size).
    let (img_start, img_end) = (&raw const __image_start as u64, &raw const __image_end as u64);
    // SAFETY: x0 from the loader is the DTB address (or 0); its header is readable.
    let dtb_size = unsafe { boot::fdt_total_size(dtb as *const u8) }.unwrap_or(0);
    boot::record(load, img_end - img_start, dtb, dtb_size as u64, entry_el as u8, bad_relocs);

    // 2. MMU and caches on, knowing only the image and the DTB as RAM.
    let mut early = mmu::RamRanges::new();
    let ok = early.add(img_start, img_end - img_start).is_ok() && early.add(dtb, dtb_size as u64).is_ok();
    // SAFETY: boot CPU, MMU off, the ranges cover the running image, stack and DTB.
    if !ok || unsafe { mmu::enable(&early, (img_start, img_end - img_start)) }.is_err() {
        arch::exit::exit(4);
    }
    heap::init_bootstrap();
    console::enable_locking();

    // 3. The device tree, typed. Without it there is no console: exit with a code.
    // SAFETY: the loader passed a DTB of `dtb_size` bytes at `dtb`, mapped as RAM.
    let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, dtb_size) };
    let Ok(platform) = dt::describe(blob) else { arch::exit::exit(5) };
    // The console /chosen/stdout-path names; an unknown UART falls back to semihosting.
    let uart = platform.console.as_ref().and_then(|c| kernel::uart::Uart::from_dt(&c.kind));
    console::set_uart(uart, platform.console.as_ref().map_or(0, |c| c.base));
    arch::exit::set_psci_conduit(platform.psci.as_ref().map(|p| match p.method {
        dt::PsciMethod::Hvc => arch::exit::Conduit::Hvc,
        dt::PsciMethod::Smc => arch::exit::Conduit::Smc,
    }));
    let args = BootArgs::new(platform.chosen.bootargs.as_deref().unwrap_or(""));
    kprintln!("\nsmmuv3-kernel {} booting", env!("CARGO_PKG_VERSION"));

    // 4. RAM from the memory nodes: final CPU map, page frames, a bigger heap.
    let mut ram = mmu::RamRanges::new();
    for m in &platform.memory {
        if ram.add(m.base, m.size).is_err() {
            kprintln!("warning: too many memory ranges, {:#x}+{:#x} left out", m.base, m.size);
        }
    }
    let _ = ram.add(img_start, img_end - img_start);
    // SAFETY: MMU on; the new map still covers the image, stack, DTB and heap.
    if let Err(e) = unsafe { mmu::switch_final(&ram) } {
        kprintln!("error: final memory map: {e}");
        arch::exit::exit(6);
    }
    let spans: alloc::vec::Vec<Span> = platform.memory.iter().map(|m| Span::new(m.base, m.size)).collect();
    let mut holes = alloc::vec![Span::new(img_start, img_end - img_start), Span::new(dtb, dtb_size as u64)];
    holes.extend(platform.reserved.iter().map(|r| Span::new(r.base, r.size)));
    let lo = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let hi = spans.iter().map(|s| s.end).max().unwrap_or(0);
    boot::set_ram_span(lo, hi);
    let mut free = layout::usable(&spans, &holes, kernel::mm::PAGE_SIZE);
    // The heap takes the first piece that is big enough; the rest are page frames.
    if let Some(i) = free.iter().position(|s| s.len() >= 2 * HEAP_BYTES) {
        let s = free[i];
        // SAFETY: the span is free RAM (memory minus image, DTB and reservations),
        // mapped normal by the final map, and handed to nothing else.
        unsafe { heap::grow(s.start as usize, HEAP_BYTES as usize) };
        free[i].start += HEAP_BYTES;
    }
    for s in &free {
        frames::add(*s);
    }

    // 4b. Interrupts: the GIC and its ITS from the DT; IRQs are taken from here on.
    arch::smp::init_boot_cpu();
    kprintln!("timer: {}", kernel::irq::timer::configure(&platform));
    if let Err(e) = kernel::irq::init(&platform) {
        kprintln!("warning: interrupts: {e}");
    }
    if kernel::irq::ready() {
        kprintln!("irq: {}", kernel::irq::summary());
    }

    // 5. The IOMMUs, reset and default-deny, before any driver runs.
    if let Err(e) = kernel::iommu::registry::probe_all(&platform, &args) {
        kprintln!("error: bad boot argument: {e}");
        arch::exit::exit(7);
    }
    for p in kernel::iommu::irq::wire_all(&platform, &args) {
        kprintln!("warning: SMMU interrupts: {p}");
    }
    for line in kernel::iommu::irq::summary() {
        kprintln!("smmu irq: {line}");
    }

    // 6. DMA policy from the command line, then drivers bind to their devices.
    match (args.flag("iommu.passthrough"), args.flag("iommu.strict")) {
        (Ok(pt), Ok(st)) => {
            kernel::dma::set_passthrough(pt.unwrap_or(false));
            kernel::dma::set_strict(st.unwrap_or(true));
        }
        (Err(v), _) | (_, Err(v)) => {
            kprintln!("error: iommu.passthrough/iommu.strict: \"{v}\" is not a boolean");
            arch::exit::exit(7);
        }
    }
    match args.get("iommu.granule").map(|v| (v, kernel::iommu::io_pgtable::Granule::from_arg(v))) {
        None => {}
        Some((_, Some(g))) => kernel::dma::set_granule(g),
        Some((v, None)) => {
            kprintln!("error: iommu.granule={v}: expected 4k, 16k or 64k");
            arch::exit::exit(7);
        }
    }
    if kernel::irq::ready()
        && let Err(e) = kernel::dma::start_flush_timer()
    {
        kprintln!("warning: lazy-flush timer: {e}; iommu.strict=0 flushes only per batch");
    }
    kernel::drivers::probe_all(&platform, &args);
    if platform.cpus.len() > 1 {
        match arch::smp::start_secondaries(&platform.cpus) {
            Ok(n) => kprintln!("smp: {n} secondary CPU(s) online"),
            Err(e) => kprintln!("smp: secondary CPUs not started: {e}"),
        }
        for line in arch::smp::idle_summary() {
            kprintln!("smp: {line}");
        }
    }

    // 7. What we found, then the tests.
    report::print(&platform, &args);
    if args.get("bench").is_some_and(|b| b != "0") {
        let failed = kernel::bench::run(&args);
        kprintln!("{} passed, {failed} failed, 0 skipped", u32::from(failed == 0));
        arch::exit::exit(if failed == 0 { 0 } else { 1 });
    }
    let summary = selftest::run(&platform, &args);
    if kernel::dma::flush_timer_up() {
        let t = kernel::dma::flush_timer_stats();
        kprintln!(
            "dma: lazy-flush timer ran {} times ({} retries, {} failed invalidations)",
            t.flushes,
            t.retries,
            t.errors
        );
    }
    kprintln!("{summary}");
    arch::exit::exit(if summary.failed == 0 { 0 } else { 1 })
}

extern crate alloc;
