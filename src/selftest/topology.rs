//! Topology suite (issue 4, suite 8): functions behind bridges and expander buses found
//! and configured as firmware would, StreamIDs spread over several level-2 stream
//! tables, DMA through every device, and `bypass_iommu` buses on the direct path.

use super::dma::Guarded;
use super::{Ctx, Test};
use crate::bus::pci::{self, Function};
use crate::dma::{self, Direction, Path};
use crate::drivers::{DmaEngine, EDUS, EduDev, edu};
use crate::ensure;
use crate::harness::Outcome;
use crate::iommu::domain::IOMMU;
use crate::iommu::registry;
use crate::iommu::smmuv3::ste::{STE0_CFG_MASK, STE0_CFG_SHIFT, STE0_V, Ste, SteConfig};
use crate::iommu::smmuv3::strtab::{Format, SPLIT};
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub static TESTS: &[Test] = &[
    Test { suite: "topology", name: "bridges_configured", run: bridges_configured },
    Test { suite: "topology", name: "two_level_stream_table", run: two_level_stream_table },
    Test { suite: "topology", name: "dma_every_device", run: dma_every_device },
    Test { suite: "topology", name: "bypass_iommu_bus_is_direct", run: bypass_iommu_bus_is_direct },
    Test { suite: "topology", name: "aliased_functions_share_a_group", run: aliased_functions_share_a_group },
];

const PAGE: usize = 4096;

/// `expect.<key>=N` from the command line; Err(outcome) when it is not a number.
fn expected(c: &Ctx, key: &str) -> Result<Option<u64>, Outcome> {
    c.args.number(key).map_err(|v| Outcome::Fail(format!("{key}={v}: not a number")))
}

fn host_first_bus(c: &Ctx, f: &Function) -> u8 {
    c.platform.pci_hosts.get(f.host).map(|h| h.bus_range.0).unwrap_or(0)
}

/// Behind a bridge, or on an expander's root bus.
fn beyond_root(c: &Ctx, f: &Function) -> bool {
    f.parent.is_some() || f.root_bus != host_first_bus(c, f)
}

/// With `expect.edus=N` a machine short of devices fails instead of skipping.
fn missing_edus(c: &Ctx, found: usize) -> Option<Outcome> {
    match expected(c, "expect.edus") {
        Err(o) => Some(o),
        Ok(Some(n)) if found as u64 != n => Some(Outcome::Fail(format!("{found} edu devices bound, expected {n}"))),
        _ => None,
    }
}

fn name(f: &Function) -> String {
    format!("{}", f.bdf())
}

fn bridges_configured(c: &Ctx) -> Outcome {
    let funcs = pci::FUNCTIONS.lock().clone();
    let errors = pci::ERRORS.lock().clone();
    let want_roots = c.args.get("expect.pci.roots");
    let want_edus = match expected(c, "expect.edus") {
        Ok(v) => v,
        Err(o) => return o,
    };
    if !funcs.iter().any(|f| beyond_root(c, f)) && want_roots.is_none() && want_edus.is_none() {
        return Outcome::Skip("no PCI bridge or expander bus in this machine".into());
    }
    ensure!(errors.is_empty(), "enumeration reported: {}", errors[0]);
    if let Some(w) = want_roots {
        let got: BTreeSet<u8> = funcs.iter().filter(|f| f.host == 0).map(|f| f.root_bus).collect();
        let want: BTreeSet<u8> = w
            .split(',')
            .filter_map(|s| {
                let s = s.trim();
                match s.strip_prefix("0x") {
                    Some(h) => u8::from_str_radix(h, 16).ok(),
                    None => s.parse().ok(),
                }
            })
            .collect();
        ensure!(got == want, "root buses {got:02x?}, expected {want:02x?} (expect.pci.roots={w})");
    }
    let by_rid = |host: usize, rid: u16| funcs.iter().find(|g| g.host == host && g.rid == rid);
    let mut ranges: Vec<(usize, u64, u64, String)> = Vec::new();
    for f in &funcs {
        let Some(host) = c.platform.pci_hosts.get(f.host) else {
            return Outcome::Fail(format!("{}: no host", name(f)));
        };
        let ecam = pci::ecam_of(host);
        let windows = pci::host_windows(host);
        let in_host = |base: u64, size: u64| {
            windows.iter().any(|w| w.pci_base <= base && base.saturating_add(size) <= w.pci_base + w.size)
        };
        // Where it hangs: on its bridge's secondary bus, or on a root bus.
        let parent = match f.parent {
            Some(prid) => {
                let Some(p) = by_rid(f.host, prid) else {
                    return Outcome::Fail(format!("{}: parent {prid:#x} not enumerated", name(f)));
                };
                let Some(pb) = p.bridge else { return Outcome::Fail(format!("{}: parent is no bridge", name(f))) };
                ensure!(
                    pb.buses.map(|b| b.0) == Some(f.addr.bus()),
                    "{} is not on the secondary bus of its bridge {} ({:x?})",
                    name(f),
                    name(p),
                    pb.buses
                );
                ensure!(p.root_bus == f.root_bus, "{} and its bridge disagree on the root bus", name(f));
                Some(pb)
            }
            None => {
                ensure!(f.addr.bus() == f.root_bus, "{} is on bus {:02x}, not a root bus", name(f), f.addr.bus());
                None
            }
        };
        let inside_parent = |base: u64, size: u64, pref: bool| match parent {
            None => in_host(base, size),
            Some(p) => {
                p.mem.is_some_and(|w| w.contains(base, size))
                    || (pref && p.pref.is_some_and(|w| w.contains(base, size)))
            }
        };
        for b in &f.bars {
            ensure!(
                b.pci % b.size == 0,
                "{} BAR{} at {:#x} not aligned to its size {:#x}",
                name(f),
                b.slot,
                b.pci,
                b.size
            );
            ensure!(
                inside_parent(b.pci, b.size, b.is64 && b.prefetchable),
                "{} BAR{} {:#x}+{:#x} outside its bridge's windows {:x?}",
                name(f),
                b.slot,
                b.pci,
                b.size,
                parent
            );
            let hw = pci::read_bar(&ecam, f, b);
            ensure!(hw == b.pci, "{} BAR{} register holds {hw:#x}, assigned {:#x}", name(f), b.slot, b.pci);
            ranges.push((f.host, b.pci, b.size, format!("{} BAR{}", name(f), b.slot)));
        }
        let (mem_on, master_on) = pci::read_command(&ecam, f);
        ensure!(mem_on == f.mem_enabled, "{}: memory decoding {mem_on}, recorded {}", name(f), f.mem_enabled);
        ensure!(f.mem_enabled || f.bars.is_empty(), "{}: memory decoding left off", name(f));
        let Some(br) = f.bridge else { continue };
        ensure!(
            f.class == 0x06 && f.subclass == 0x04,
            "{}: a type-1 header with class {:02x}.{:02x}",
            name(f),
            f.class,
            f.subclass
        );
        ensure!(mem_on && master_on, "bridge {}: memory {mem_on}, bus master {master_on}", name(f));
        let hw = pci::read_bridge(&ecam, f);
        ensure!(hw == br, "bridge {} registers {hw:x?} differ from what enumeration recorded {br:x?}", name(f));
        let Some((sec, sub)) = br.buses else { return Outcome::Fail(format!("bridge {} has no bus number", name(f))) };
        ensure!(br.primary == f.addr.bus() && f.addr.bus() < sec && sec <= sub, "bridge {}: buses {br:x?}", name(f));
        if let Some(p) = parent {
            let (psec, psub) = p.buses.unwrap_or((0, 0));
            ensure!(psec < sec && sub <= psub, "bridge {} buses {sec:02x}..{sub:02x} escape its parent's", name(f));
        }
        // Everything numbered inside [sec, sub] hangs below this bridge, and something does.
        for g in funcs.iter().filter(|g| g.host == f.host && (sec..=sub).contains(&g.addr.bus())) {
            let mut up = g.parent;
            let mut hops = 0;
            while let Some(r) = up.filter(|&r| r != f.rid && hops < 64) {
                up = by_rid(g.host, r).and_then(|x| x.parent);
                hops += 1;
            }
            ensure!(up == Some(f.rid), "{} is numbered inside bridge {}'s buses but not below it", name(g), name(f));
        }
        for (w, pref) in [(br.mem, false), (br.pref, true)] {
            let Some(w) = w else { continue };
            ensure!(
                w.base % (1 << 20) == 0 && w.size % (1 << 20) == 0,
                "bridge {}: window {w:x?} not 1 MiB-granular",
                name(f)
            );
            ensure!(inside_parent(w.base, w.size, pref), "bridge {}: window {w:x?} outside its parent's", name(f));
        }
    }
    ranges.sort();
    for p in ranges.windows(2) {
        ensure!(p[0].0 != p[1].0 || p[0].1 + p[0].2 <= p[1].1, "{} and {} overlap", p[0].3, p[1].3);
    }
    let fns = funcs.iter().filter(|f| (f.vendor, f.device) == (edu::VENDOR, edu::DEVICE)).count();
    let bound = EDUS.lock().len();
    ensure!(fns == bound, "{fns} edu functions enumerated, {bound} bound to the driver");
    if let Some(n) = want_edus {
        ensure!(bound as u64 == n, "{bound} edu devices, expected {n} (expect.edus)");
    }
    Outcome::Pass
}

fn two_level_stream_table(c: &Ctx) -> Outcome {
    if registry::count() == 0 {
        return Outcome::Skip("no SMMU".into());
    }
    if let Some(o) = missing_edus(c, EDUS.lock().len()) {
        return o;
    }
    // (name, SMMU index, StreamID, expected STE.Config) of every device behind an SMMU.
    let mut devs: Vec<(String, usize, u32, SteConfig)> = Vec::new();
    for e in EDUS.lock().iter() {
        let (Some(_), Some((ph, sid))) = (e.dma.master, e.func.stream) else { continue };
        let Some(smmu) = registry::by_phandle(ph) else { continue };
        let cfg = match dma::path(&e.dma) {
            Path::Iommu(_) => SteConfig::S1,
            Path::Direct => SteConfig::Bypass,
            Path::Blocked => return Outcome::Fail(format!("{} is blocked", e.dma.name)),
        };
        devs.push((e.dma.name.clone(), smmu, sid, cfg));
    }
    let l1s: BTreeSet<(usize, u32)> = devs.iter().map(|d| (d.1, d.2 >> SPLIT)).collect();
    if l1s.len() < 2 {
        return Outcome::Skip(format!(
            "the StreamIDs of {} device(s) fall in {} level-2 table(s): needs devices 256 RIDs apart (virt-many)",
            devs.len(),
            l1s.len()
        ));
    }
    for &(smmu, l1) in &l1s {
        let r = registry::with_smmu(smmu, |s| -> Result<(), String> {
            let Format::TwoLevel { l2 } = &s.strtab.format else {
                return Err(format!("SMMU {smmu}: linear stream table with {} SID bits", s.strtab.sid_bits));
            };
            if !l2.contains_key(&l1) {
                return Err(format!("no level-2 table for StreamIDs {:#x}..", l1 << SPLIT));
            }
            // A StreamID of the same level-2 table that no device uses stays abort.
            let unused = (0..1u32 << SPLIT).map(|i| (l1 << SPLIT) | i).rev().find(|x| !devs.iter().any(|d| d.2 == *x));
            if let Some(u) = unused {
                let ste = s.read_ste(u).map_err(|e| format!("{e}"))?;
                if ste != Ste::abort().words() {
                    return Err(format!("STE of unused StreamID {u:#x} is {:#x}, not abort", ste[0]));
                }
            }
            Ok(())
        });
        match r {
            Some(Ok(())) => {}
            Some(Err(m)) => return Outcome::Fail(m),
            None => return Outcome::Fail(format!("SMMU {smmu} vanished")),
        }
    }
    let tables = registry::with_smmu(0, |s| s.strtab.l2_tables()).unwrap_or(0);
    ensure!(tables >= l1s.len(), "{tables} level-2 tables for {} StreamID ranges in use", l1s.len());
    for (n, smmu, sid, cfg) in &devs {
        let ste = match registry::with_smmu(*smmu, |s| s.read_ste(*sid)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Outcome::Fail(format!("{n}: STE of SID {sid:#x}: {e}")),
            None => return Outcome::Fail(format!("SMMU {smmu} vanished")),
        };
        let got = SteConfig::from_bits((ste[0] & STE0_CFG_MASK) >> STE0_CFG_SHIFT);
        ensure!(ste[0] & STE0_V != 0, "{n}: STE of SID {sid:#x} not valid ({:#x})", ste[0]);
        ensure!(got == *cfg, "{n}: STE of SID {sid:#x} has Config {got:?}, its domain needs {cfg:?}");
    }
    Outcome::Pass
}

/// Memory -> engine -> memory through the DMA API, every byte checked; `seed` differs
/// per device so data that went to the wrong buffer does not pass.
fn round_trip(e: &mut EduDev, seed: u8) -> Result<(u64, u64, u64, u64), String> {
    let src = Guarded::new(PAGE).ok_or("no memory")?;
    let dst = Guarded::new(PAGE).ok_or("no memory")?;
    src.fill(seed);
    let s = dma::map_single(&e.dma, src.pa, PAGE, Direction::ToDevice).map_err(|x| format!("map src: {x}"))?;
    let d = match dma::map_single(&e.dma, dst.pa, PAGE, Direction::FromDevice) {
        Ok(d) => d,
        Err(x) => {
            let _ = dma::unmap_single(&e.dma, s, PAGE, Direction::ToDevice);
            return Err(format!("map dst: {x}"));
        }
    };
    let r = e.edu.read_mem(s, 0, PAGE).and_then(|_| e.edu.write_mem(d, 0, PAGE));
    let _ = dma::unmap_single(&e.dma, s, PAGE, Direction::ToDevice);
    let _ = dma::unmap_single(&e.dma, d, PAGE, Direction::FromDevice);
    r.map_err(|x| format!("DMA: {x}"))?;
    if let Some(i) = dst.same_as(&src) {
        return Err(format!("byte {i} differs after DMA {s:#x} -> {d:#x}"));
    }
    if !src.canaries_intact() || !dst.canaries_intact() {
        return Err("canary pages changed".into());
    }
    Ok((src.pa, s, dst.pa, d))
}

fn dma_every_device(c: &Ctx) -> Outcome {
    let mut edus = EDUS.lock();
    if let Some(o) = missing_edus(c, edus.len()) {
        return o;
    }
    if !edus.iter().any(|e| beyond_root(c, &e.func)) {
        return Outcome::Skip("no edu behind a bridge or on an expander bus (see the virt-many boot)".into());
    }
    let _ = registry::with_smmu(0, |s| s.take_events());
    let mut failed = Vec::new();
    for (i, e) in edus.iter_mut().enumerate() {
        let path = dma::path(&e.dma);
        match round_trip(e, 0x31u8.wrapping_mul(i as u8 + 1)) {
            Ok((spa, s, dpa, d)) => {
                let translated = matches!(path, Path::Iommu(_));
                if translated && (s == spa || d == dpa) {
                    failed.push(format!("{}: translated but DMA address == PA", e.dma.name));
                }
                if !translated && (s != spa || d != dpa) {
                    failed.push(format!("{}: direct but DMA address {s:#x} != PA {spa:#x}", e.dma.name));
                }
            }
            Err(m) => failed.push(format!("{} (SID {:x?}): {m}", e.dma.name, e.func.stream.map(|s| s.1))),
        }
    }
    let ev = registry::with_smmu(0, |s| s.take_events()).unwrap_or_default();
    ensure!(failed.is_empty(), "{} of {} devices failed; first: {}", failed.len(), edus.len(), failed[0]);
    ensure!(ev.is_empty(), "SMMU events during good DMA: {}", ev[0]);
    Outcome::Pass
}

fn bypass_iommu_bus_is_direct(c: &Ctx) -> Outcome {
    let want = match expected(c, "expect.edus.direct") {
        Ok(v) => v,
        Err(o) => return o,
    };
    if registry::count() == 0 {
        return Outcome::Skip("no SMMU: every device takes the direct path (suite 5)".into());
    }
    let mut edus = EDUS.lock();
    let direct: Vec<usize> = (0..edus.len()).filter(|&i| edus[i].func.stream.is_none()).collect();
    if direct.is_empty() && want.unwrap_or(0) == 0 {
        return Outcome::Skip("no device outside the SMMU's iommu-map (a bypass_iommu bus) in this machine".into());
    }
    if let Some(n) = want {
        ensure!(direct.len() as u64 == n, "{} device(s) outside the iommu-map, expected {n}", direct.len());
    }
    for (k, &i) in direct.iter().enumerate() {
        let e = &mut edus[i];
        let mapped = c.platform.pci_hosts.get(e.func.host).map(|h| h.rid_to_sid(e.func.dma_alias).is_some());
        ensure!(mapped == Some(false), "{}: its RID is in the iommu-map (or its host is unknown)", e.dma.name);
        ensure!(e.dma.master.is_none(), "{}: registered as an SMMU master", e.dma.name);
        ensure!(dma::path(&e.dma) == Path::Direct, "{}: path {:?}, not direct", e.dma.name, dma::path(&e.dma));
        match round_trip(e, 0x5au8.wrapping_add(k as u8)) {
            Ok((spa, s, dpa, d)) => {
                ensure!(s == spa && d == dpa, "{}: DMA addresses {s:#x}/{d:#x} are not the PAs", e.dma.name)
            }
            Err(m) => return Outcome::Fail(format!("{}: {m}", e.dma.name)),
        }
    }
    Outcome::Pass
}

/// Functions the SMMU cannot tell apart (same StreamID: behind one PCIe-to-PCI bridge, the
/// bridge's alias) are one IOMMU group in one domain: each one's DMA, with the other's
/// buffers mapped at the same time, lands where its own mapping says.
fn aliased_functions_share_a_group(_: &Ctx) -> Outcome {
    let mut edus = EDUS.lock();
    let pair = (0..edus.len()).find_map(|i| {
        let s = edus[i].func.stream?;
        let j = (i + 1..edus.len()).find(|&j| edus[j].func.stream == Some(s))?;
        Some((i, j))
    });
    let Some((i, j)) = pair else {
        return Outcome::Skip("no two edus share a StreamID (see the virt-many boot)".into());
    };
    let (ma, mb) = (edus[i].dma.master, edus[j].dma.master);
    let (Some(ma), Some(mb)) = (ma, mb) else {
        return Outcome::Fail(format!("{} / {}: not IOMMU masters", edus[i].dma.name, edus[j].dma.name));
    };
    {
        let io = IOMMU.lock();
        ensure!(ma != mb, "the two functions are one master");
        let (ga, gb) = (io.group_of(ma), io.group_of(mb));
        ensure!(ga.is_ok() && ga == gb, "StreamID shared but groups differ: {ga:?} vs {gb:?}");
        let (da, db) = (io.domain_of(ma), io.domain_of(mb));
        ensure!(da.is_some() && da == db, "one group but domains differ: {da:?} vs {db:?}");
    }
    let _ = registry::with_smmu(0, |s| s.take_events());
    // Both functions' buffers mapped at once, then each engine copies its own.
    // j > i by construction.
    let (x, y) = edus.split_at_mut(j);
    let (a, b) = (&mut x[i], &mut y[0]);
    let bufs: Vec<Guarded> = (0..4).filter_map(|_| Guarded::new(PAGE)).collect();
    ensure!(bufs.len() == 4, "no memory");
    bufs[0].fill(0x5a);
    bufs[2].fill(0xa5);
    let maps = [
        dma::map_single(&a.dma, bufs[0].pa, PAGE, Direction::ToDevice),
        dma::map_single(&a.dma, bufs[1].pa, PAGE, Direction::FromDevice),
        dma::map_single(&b.dma, bufs[2].pa, PAGE, Direction::ToDevice),
        dma::map_single(&b.dma, bufs[3].pa, PAGE, Direction::FromDevice),
    ];
    let mut run = || -> Result<(), String> {
        let d: Vec<u64> = maps.iter().map(|m| m.clone().map_err(|e| format!("map: {e}"))).collect::<Result<_, _>>()?;
        a.edu.read_mem(d[0], 0, PAGE).and_then(|_| a.edu.write_mem(d[1], 0, PAGE)).map_err(|e| format!("{e}"))?;
        b.edu.read_mem(d[2], 0, PAGE).and_then(|_| b.edu.write_mem(d[3], 0, PAGE)).map_err(|e| format!("{e}"))?;
        Ok(())
    };
    let r = run();
    let devs = [&a.dma, &a.dma, &b.dma, &b.dma];
    let dirs = [Direction::ToDevice, Direction::FromDevice, Direction::ToDevice, Direction::FromDevice];
    for k in 0..4 {
        if let Ok(d) = maps[k] {
            let _ = dma::unmap_single(devs[k], d, PAGE, dirs[k]);
        }
    }
    let ev = registry::with_smmu(0, |s| s.take_events()).unwrap_or_default();
    ensure!(r.is_ok(), "{} / {}: {}", a.dma.name, b.dma.name, r.err().unwrap_or_default());
    ensure!(ev.is_empty(), "SMMU events: {}", ev[0]);
    ensure!(bufs[1].bytes() == bufs[0].bytes(), "{}: copy differs", a.dma.name);
    ensure!(bufs[3].bytes() == bufs[2].bytes(), "{}: copy differs", b.dma.name);
    ensure!(bufs.iter().all(Guarded::canaries_intact), "canary pages changed");
    Outcome::Pass
}
