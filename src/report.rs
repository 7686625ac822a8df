//! The boot report: what the kernel found, in words a person reads at a glance.

use crate::arch::{self, mmu, timer};
use crate::bootargs::BootArgs;
use crate::dt::Platform;
use crate::kprintln;
use crate::mm::{PAGE_SIZE, frames, heap};

fn mib(b: u64) -> u64 {
    b >> 20
}

/// How a device's DMA reaches memory right now, in words.
fn dma_path(d: &crate::dma::DmaDevice) -> alloc::string::String {
    match crate::dma::path(d) {
        crate::dma::Path::Direct => alloc::string::String::from("direct (DMA address = physical)"),
        crate::dma::Path::Blocked => alloc::string::String::from("BLOCKED"),
        crate::dma::Path::Iommu(did) => {
            let g = crate::iommu::domain::IOMMU.lock().domain(did).map(|x| x.granule.name()).unwrap_or("?");
            alloc::format!("translated, domain {did} ({g} pages){}", shared_group(d))
        }
    }
}

/// ", one IOMMU group with <others>" when the SMMU cannot isolate the device from others.
fn shared_group(d: &crate::dma::DmaDevice) -> alloc::string::String {
    let Some(m) = d.master else { return alloc::string::String::new() };
    let io = crate::iommu::domain::IOMMU.lock();
    let Ok(g) = io.group_of(m) else { return alloc::string::String::new() };
    let others: alloc::vec::Vec<&str> =
        io.groups[g].masters.iter().filter(|&&o| o != m).map(|&o| io.masters[o].name.as_str()).collect();
    if others.is_empty() {
        alloc::string::String::new()
    } else {
        alloc::format!(", one IOMMU group with {} (same StreamID)", others.join(", "))
    }
}

/// The DMA API's policy in words: default domains, page size, invalidation.
fn dma_policy() -> alloc::string::String {
    use crate::dma;
    if dma::passthrough() {
        return "default domains are identity (iommu.passthrough=1): DMA goes direct".into();
    }
    let inval = if dma::strict() {
        alloc::string::String::from("every unmap invalidated before it returns (iommu.strict=1)")
    } else if dma::flush_timer_up() {
        alloc::format!(
            "unmaps invalidated in batches of {} or after {} ms at most (iommu.strict=0)",
            dma::LAZY_BATCH,
            dma::LAZY_TIMEOUT_US / 1000
        )
    } else {
        alloc::format!(
            "unmaps invalidated in batches of {} (iommu.strict=0; no flush timer: no time bound)",
            dma::LAZY_BATCH
        )
    };
    alloc::format!("default domains translated, {} pages; {inval}", dma::granule().name())
}

pub fn print(p: &Platform, args: &BootArgs) {
    let bi = crate::boot_info();
    let midr = arch::midr();
    kprintln!("== platform report ==");
    kprintln!(
        "cpu:      {} (MIDR {:#010x}), MPIDR {:#x}, PA {} bits, timer {} Hz",
        arch::cpu_name(midr),
        midr,
        arch::mpidr() & 0xff_00ff_ffff,
        mmu::pa_bits(),
        timer::freq()
    );
    kprintln!("el:       entered at EL{}, running at EL{}", bi.entry_el, arch::current_el());
    kprintln!(
        "image:    loaded at {:#x}, {} KiB (file + bss + stack), mmu {}",
        bi.load_addr,
        bi.image_size >> 10,
        if mmu::mmu_enabled() { "on, caches on" } else { "off" }
    );
    kprintln!("dtb:      at {:#x}, {} bytes; bootargs \"{}\"", bi.dtb, bi.dtb_size, args.raw());
    for m in &p.memory {
        kprintln!("memory:   {:#x}..{:#x} ({} MiB)", m.base, m.base + m.size, mib(m.size));
    }
    for r in &p.reserved {
        kprintln!(
            "reserved: {:#x}..{:#x} {}{}",
            r.base,
            r.base + r.size,
            r.node,
            if r.no_map { " (no-map)" } else { "" }
        );
    }
    let (free, total) = frames::stats();
    let (hused, htotal) = heap::stats();
    kprintln!(
        "frames:   {} MiB free of {} MiB; heap {} KiB used of {} MiB",
        mib(free * PAGE_SIZE),
        mib(total * PAGE_SIZE),
        hused >> 10,
        htotal >> 20
    );
    match (&p.console, crate::console::uart()) {
        (Some(c), (Some(u), _)) => kprintln!("console:  {} {:?} at {:#x} (driven as {:?})", c.node, c.kind, c.base, u),
        (Some(c), (None, _)) => {
            kprintln!("console:  {} {:?} at {:#x}: no driver for it, output via semihosting", c.node, c.kind, c.base)
        }
        (None, _) => kprintln!("console:  none in /chosen/stdout-path and no PL011: output via semihosting"),
    }
    match &p.gic {
        Some(g) => {
            kprintln!("gic:      GICv{} {} distributor {:#x}", g.version, g.node, g.dist_base);
            for r in &g.redist {
                kprintln!("          redistributors {:#x}+{:#x}", r.base, r.size);
            }
            for its in &g.its {
                kprintln!("          ITS {} at {:#x}", its.node, its.base);
            }
        }
        None => kprintln!("gic:      none"),
    }
    if p.smmus.is_empty() {
        kprintln!("smmu:     no arm,smmu-v3 in the device tree (IOMMU absent: DMA goes direct)");
    }
    for s in &p.smmus {
        let irqs: alloc::vec::Vec<&str> = s.irqs.iter().map(|(n, _)| n.as_str()).collect();
        kprintln!(
            "smmu:     {} at {:#x}+{:#x}, {}, {}, irqs [{}]{}",
            s.node,
            s.base,
            s.size,
            if s.enabled { "enabled" } else { "DISABLED in DT" },
            if s.coherent { "dma-coherent" } else { "non-coherent" },
            irqs.join(", "),
            if s.quirks.is_empty() { alloc::string::String::new() } else { alloc::format!(", quirks {:?}", s.quirks) }
        );
    }
    {
        let reg = crate::iommu::registry::REGISTRY.lock();
        for e in &reg.smmus {
            let d = &e.dev;
            kprintln!("smmuv3:   {} probed: {}", e.node, d.features);
            kprintln!(
                "          {} stream table ({} SID bits), CMDQ 2^{}, EVTQ 2^{}, {}; CR0ACK {:#x}, GBPA {:#x}",
                if d.strtab.is_two_level() { "2-level" } else { "linear" },
                d.strtab.sid_bits,
                d.cmdq_log2(),
                d.evtq_log2(),
                if d.mem.coherent { "coherent table walks" } else { "NON-COHERENT: cache maintenance on" },
                d.cr0ack(),
                d.gbpa()
            );
        }
        for s in &reg.skipped {
            kprintln!("smmuv3:   {} NOT USED: {}", s.node, s.why);
        }
        drop(reg);
        kprintln!("dma:      {}", dma_policy());
    }
    for h in &p.pci_hosts {
        kprintln!(
            "pci:      {} ECAM {:#x}+{:#x}, buses {}..{}",
            h.node,
            h.ecam_base,
            h.ecam_size,
            h.bus_range.0,
            h.bus_range.1
        );
        for m in &h.iommu_map {
            kprintln!(
                "          RID {:#06x}..{:#06x} -> {} SID {:#x}",
                m.rid_base,
                m.rid_base as u64 + m.length as u64 - 1,
                m.smmu.as_deref().unwrap_or("(not an SMMUv3)"),
                m.sid_base
            );
        }
    }
    for f in crate::bus::pci::FUNCTIONS.lock().iter() {
        let sid = match f.stream {
            Some((ph, sid)) => match p.smmu_by_phandle(ph) {
                Some(s) => alloc::format!("{} SID {sid:#x}", s.node),
                None => alloc::format!("phandle {ph:#x} (not an SMMUv3) ID {sid:#x}"),
            },
            None => alloc::string::String::from("no SMMU (direct DMA)"),
        };
        kprintln!(
            "pci fn:   {:02x}:{:02x}.{} {:04x}:{:04x} class {:02x}.{:02x} -> {}",
            f.addr.bus(),
            f.addr.device(),
            f.addr.function(),
            f.vendor,
            f.device,
            f.class,
            f.subclass,
            sid
        );
        for b in &f.bars {
            kprintln!("          BAR{} {:#x}+{:#x}{}", b.slot, b.addr, b.size, if b.is64 { " (64-bit)" } else { "" });
        }
        if let Some(br) = &f.bridge {
            let win = |w: Option<crate::bus::pci::Window>| match w {
                Some(w) => alloc::format!("{:#x}..{:#x}", w.base, w.end() - 1),
                None => alloc::string::String::from("off"),
            };
            let buses = match br.buses {
                Some((s, u)) => alloc::format!("buses {s:02x}..{u:02x}"),
                None => alloc::string::String::from("NO BUS NUMBER"),
            };
            kprintln!("          PCI bridge: {buses}, memory {}, prefetchable {}", win(br.mem), win(br.pref));
        }
        if f.dma_alias != f.rid {
            let a = f.dma_alias;
            kprintln!("          DMA requests carry {:02x}:{:02x}.{} (bridge alias)", a >> 8, (a >> 3) & 31, a & 7);
        }
    }
    for e in crate::bus::pci::ERRORS.lock().iter() {
        kprintln!("pci error: {e}");
    }
    for d in crate::drivers::EDUS.lock().iter() {
        let path = dma_path(&d.dma);
        kprintln!("driver:   {} bound (DMA mask {:#x}): {}", d.dma.name, d.dma.mask, path);
    }
    for b in crate::drivers::VIRTIO_BLKS.lock().iter() {
        let path = dma_path(&b.dma);
        kprintln!(
            "driver:   {} bound: {} sectors, VIRTIO_F_ACCESS_PLATFORM {}: {}",
            b.name,
            b.capacity(),
            if b.access_platform() { "on" } else { "off" },
            path
        );
    }
    for d in crate::drivers::PLATFORM_MASTERS.lock().iter() {
        let path = dma_path(d);
        kprintln!("master:   {} attached: {}", d.name, path);
    }
    for e in crate::drivers::PROBE_ERRORS.lock().iter() {
        kprintln!("driver error: {e}");
    }
    for m in &p.masters {
        kprintln!("master:   {} -> {} SIDs {:x?}", m.node, m.smmu, m.stream_ids);
    }
    for e in &p.errors {
        kprintln!("dt error: {}: {}", e.node, e.msg);
    }
    kprintln!("== end of report ==");
}
