//! The SMMUs' interrupts: wired lines taken by name from the DT (`eventq`, `gerror`,
//! `cmdq-sync`, or one `combined` line for all), or the SMMU's own MSIs (IDR0.MSI with
//! an ITS `msi-parent`); handlers drain events as they arrive, acknowledge global
//! errors and count CMD_SYNC completions. PRI is not supported, so `priq` stays unused.
//! A line that goes to another interrupt controller than the GIC, or is absent, is
//! polled. Which line does what, and the MSI register encodings, are pure (host-tested).

use crate::dt;
use crate::irq::{Trigger, gic_spec_to_intid};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// What an SMMU interrupt line is for, by its `interrupt-names` entry
/// (Documentation/devicetree/bindings/iommu/arm,smmu-v3.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Evtq,
    Gerror,
    CmdqSync,
    /// One line for the event queue, global errors and PRI (Linux `combined_irq`).
    Combined,
    Priq,
}

impl Role {
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "eventq" => Some(Role::Evtq),
            "gerror" => Some(Role::Gerror),
            "cmdq-sync" => Some(Role::CmdqSync),
            "combined" => Some(Role::Combined),
            "priq" => Some(Role::Priq),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Evtq => "eventq",
            Role::Gerror => "gerror",
            Role::CmdqSync => "cmdq-sync",
            Role::Combined => "combined",
            Role::Priq => "priq",
        }
    }

    /// The line serves `r` (a `combined` line serves the event queue and global errors).
    pub fn serves(self, r: Role) -> bool {
        self == r || (self == Role::Combined && matches!(r, Role::Evtq | Role::Gerror))
    }
}

/// Why a line of the DT is not wired to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unwired {
    /// `priq`: page requests (PRI) are not supported (QEMU's SMMU has no PRI either).
    PriNotSupported,
    /// A name the binding does not define.
    UnknownName,
    /// A `combined` line is wired; like Linux, separate eventq/gerror lines are then ignored.
    CombinedServes,
    /// The line's interrupt controller is not the GIC (its cells are not GIC cells).
    OtherController { parent: Option<u32> },
    /// A GIC specifier, but not an SPI or PPI.
    NotSpiPpi { cells: Vec<u32> },
    /// No GICv3 to route to.
    NoGic,
}

impl Unwired {
    /// True for what is not a fault of the DT or the driver (it is only worth a note).
    pub fn expected(&self) -> bool {
        matches!(self, Unwired::PriNotSupported | Unwired::CombinedServes)
    }
}

impl fmt::Display for Unwired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unwired::PriNotSupported => write!(f, "unused: PRI (page requests) is not supported"),
            Unwired::UnknownName => write!(f, "not a name the arm,smmu-v3 binding defines: ignored"),
            Unwired::CombinedServes => write!(f, "ignored: the `combined` line serves it"),
            Unwired::OtherController { parent: Some(ph) } => {
                write!(f, "goes to interrupt controller {ph:#x}, not the GIC: polled")
            }
            Unwired::OtherController { parent: None } => {
                write!(f, "goes to an interrupt controller without a phandle, not the GIC: polled")
            }
            Unwired::NotSpiPpi { cells } => write!(f, "{cells:x?} is not a GIC SPI/PPI: polled"),
            Unwired::NoGic => write!(f, "no GICv3: polled"),
        }
    }
}

/// One DT line and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinePlan {
    pub name: String,
    pub action: Result<(Role, u32, Trigger), Unwired>,
}

/// Which of `smmu`'s DT lines to wire, to which GIC INTID, and why not the others. A
/// line is a GIC line only if its interrupt parent (inherited up the tree, or its own
/// `interrupts-extended` entry) is `gic`.
pub fn plan_lines(smmu: &dt::Smmu, gic: Option<&dt::Gic>) -> Vec<LinePlan> {
    let has_combined = smmu.irqs.iter().any(|(n, _)| n == "combined");
    smmu.irqs
        .iter()
        .enumerate()
        .map(|(i, (name, cells))| {
            let action = match Role::from_name(name) {
                None => Err(Unwired::UnknownName),
                Some(Role::Priq) => Err(Unwired::PriNotSupported),
                Some(r) if has_combined && r != Role::Combined && Role::Combined.serves(r) => {
                    Err(Unwired::CombinedServes)
                }
                Some(r) => {
                    let parent = smmu.irq_parents.get(i).copied().flatten();
                    match gic {
                        Some(g) if g.version == 3 && g.is_parent(parent) => gic_spec_to_intid(cells)
                            .map(|(intid, t)| (r, intid, t))
                            .ok_or_else(|| Unwired::NotSpiPpi { cells: cells.clone() }),
                        Some(g) if g.version == 3 => Err(Unwired::OtherController { parent }),
                        _ => Err(Unwired::NoGic),
                    }
                }
            };
            LinePlan { name: name.clone(), action }
        })
        .collect()
}

/// How an SMMU signals its event queue and global error interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqPath {
    /// Wired lines from the DT (or polling where there are none).
    Wired,
    /// The SMMU writes MSIs to the ITS with phandle `its`, DeviceID `devid`.
    Msi { its: u32, devid: u32 },
}

/// MSIs when the SMMU can (IDR0.MSI) and the DT says where (`msi-parent` to an ITS
/// with a DeviceID cell), like Linux arm_smmu_setup_msis; else the wired lines, with
/// the reason when MSIs were possible in part.
pub fn choose_path(idr0_msi: bool, smmu: &dt::Smmu, gic: Option<&dt::Gic>) -> (IrqPath, Option<&'static str>) {
    if !idr0_msi {
        return (IrqPath::Wired, None);
    }
    let Some(its) = smmu.msi_parent else { return (IrqPath::Wired, Some("IDR0.MSI=1 but no msi-parent")) };
    if !gic.is_some_and(|g| g.its.iter().any(|i| i.phandle == its && its != 0)) {
        return (IrqPath::Wired, Some("msi-parent is not an ITS of the GIC"));
    }
    match smmu.msi_device_id {
        Some(devid) => (IrqPath::Msi { its, devid }, None),
        None => (IrqPath::Wired, Some("msi-parent has no DeviceID cell (#msi-cells = <1>)")),
    }
}

/// SMMU_*_IRQ_CFG0.ADDR is bits \[51:2\] of the doorbell.
pub const IRQ_CFG0_ADDR_MASK: u64 = ((1 << 52) - 1) & !0x3;
/// SMMU_*_IRQ_CFG2.MemAttr \[3:0\] = 0b0001, Device-nGnRE (Linux ARM_SMMU_MEMATTR_DEVICE_nGnRE);
/// SH \[5:4\] does not apply to Device memory.
pub const IRQ_CFG2_MEMATTR_DEVICE_NGNRE: u32 = 0x1;

/// (CFG0, CFG1, CFG2) of an MSI writing `data` to `doorbell` (Linux arm_smmu_write_msi_msg).
/// `None` if the doorbell is not 4-byte aligned, 0, or beyond 52 bits.
pub fn msi_cfg(doorbell: u64, data: u32) -> Option<(u64, u32, u32)> {
    if doorbell == 0 || doorbell & !IRQ_CFG0_ADDR_MASK != 0 {
        return None;
    }
    Some((doorbell, data, IRQ_CFG2_MEMATTR_DEVICE_NGNRE))
}

#[cfg(target_os = "none")]
pub use hw::*;

#[cfg(target_os = "none")]
mod hw {
    use super::{IrqPath, Role, choose_path, msi_cfg, plan_lines};
    use crate::bootargs::BootArgs;
    use crate::dt::Platform;
    use crate::iommu::registry::REGISTRY;
    use crate::iommu::smmuv3::device::{IrqCounters, IrqLines, IrqMsi, MsiCfg, SyncMode};
    use crate::irq::{self, gic::DEFAULT_PRIORITY};
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::sync::atomic::Ordering;

    /// What a handler needs, leaked once per wired line (lives as long as the SMMU).
    struct LineCtx {
        smmu: usize,
        counters: &'static IrqCounters,
    }

    /// One wired line (or MSI) of one SMMU, for the report and the tests.
    #[derive(Debug, Clone)]
    pub struct Wired {
        pub smmu: usize,
        /// The role's DT name ("eventq", "gerror", "cmdq-sync", "combined").
        pub name: &'static str,
        pub intid: u32,
        /// An LPI the SMMU raises by MSI, not a wired line.
        pub msi: bool,
    }

    pub static WIRED: spin::Mutex<Vec<Wired>> = spin::Mutex::new(Vec::new());
    /// One line per SMMU: which path, what is wired, what is not (boot log).
    static SUMMARY: spin::Mutex<Vec<String>> = spin::Mutex::new(Vec::new());

    fn ctx(data: usize) -> &'static LineCtx {
        // SAFETY: `data` is a pointer from Box::leak(LineCtx) made in `wire_all`.
        unsafe { &*(data as *const LineCtx) }
    }

    /// Run `f` on the line's SMMU now, unless the interrupted code holds the registry (then
    /// the work waits for its next `drain_events` or the next interrupt).
    fn with_dev(c: &LineCtx, f: impl FnOnce(&mut crate::iommu::smmuv3::device::SmmuV3)) {
        if let Some(mut reg) = REGISTRY.try_lock()
            && let Some(e) = reg.smmus.get_mut(c.smmu)
        {
            f(&mut e.dev);
        }
    }

    fn evtq_handler(_intid: u32, data: usize) {
        let c = ctx(data);
        c.counters.evtq.fetch_add(1, Ordering::SeqCst);
        with_dev(c, |dev| {
            dev.on_evtq_irq();
        });
    }

    fn gerror_handler(_intid: u32, data: usize) {
        let c = ctx(data);
        c.counters.gerror.fetch_add(1, Ordering::SeqCst);
        with_dev(c, |dev| {
            dev.on_gerror_irq();
        });
    }

    /// One line for everything (Linux arm_smmu_combined_irq_handler + _thread): global
    /// errors first, then the event queue. Counted as an event queue interrupt, and as
    /// a GERROR one when an error was active.
    fn combined_handler(_intid: u32, data: usize) {
        let c = ctx(data);
        c.counters.evtq.fetch_add(1, Ordering::SeqCst);
        with_dev(c, |dev| {
            if dev.on_gerror_irq() {
                c.counters.gerror.fetch_add(1, Ordering::SeqCst);
            }
            dev.on_evtq_irq();
        });
    }

    /// `run` waits on this count with the registry held: count only.
    fn sync_handler(_intid: u32, data: usize) {
        ctx(data).counters.sync.fetch_add(1, Ordering::SeqCst);
    }

    /// `smmu.sync=poll|irq`.
    pub fn sync_mode(args: &BootArgs) -> Result<SyncMode, String> {
        match args.get("smmu.sync") {
            None | Some("poll") => Ok(SyncMode::Poll),
            Some("irq") => Ok(SyncMode::Irq),
            Some(v) => Err(format!("smmu.sync={v}: expected poll or irq")),
        }
    }

    fn handler_for(r: Role) -> Option<fn(u32, usize)> {
        match r {
            Role::Evtq => Some(evtq_handler),
            Role::Gerror => Some(gerror_handler),
            Role::CmdqSync => Some(sync_handler),
            Role::Combined => Some(combined_handler),
            Role::Priq => None,
        }
    }

    fn mark(lines: &mut IrqLines, r: Role) {
        match r {
            Role::Evtq => lines.evtq = true,
            Role::Gerror => lines.gerror = true,
            Role::CmdqSync => lines.cmdq_sync = true,
            Role::Combined => {
                lines.evtq = true;
                lines.gerror = true;
            }
            Role::Priq => {}
        }
    }

    /// Handler for `intid` with a context for SMMU `smmu`, configured and enabled.
    fn route(intid: u32, trig: irq::Trigger, lpi: bool, f: fn(u32, usize), c: &'static LineCtx) -> Result<(), String> {
        irq::register_with(intid, f, c as *const LineCtx as usize).map_err(|e| format!("{e}"))?;
        if !lpi {
            irq::configure(intid, trig, DEFAULT_PRIORITY).map_err(|e| format!("{e}"))?;
        }
        irq::enable(intid).map_err(|e| {
            let _ = irq::unregister(intid);
            format!("{e}")
        })
    }

    /// The SMMU's own MSIs: an LPI each for the event queue and global errors from the
    /// ITS `its` with DeviceID `devid`, handlers enabled; returns the CFG values. On
    /// failure everything it set up is undone.
    fn setup_msis(
        i: usize,
        its: u32,
        devid: u32,
        counters: &'static IrqCounters,
        lines: &mut IrqLines,
        done: &mut Vec<String>,
    ) -> Result<IrqMsi, String> {
        let mut got: Vec<(Role, irq::MsiVector, MsiCfg)> = Vec::new();
        let one = |r: Role, got: &mut Vec<(Role, irq::MsiVector, MsiCfg)>| -> Result<(), String> {
            let v = irq::alloc_msi(Some(its), devid).map_err(|e| format!("{} LPI: {e}", r.name()))?;
            let Some((cfg0, cfg1, cfg2)) = msi_cfg(v.doorbell, v.data) else {
                let _ = irq::free_msi(&v);
                return Err(format!("doorbell {:#x} cannot be an SMMU MSI address", v.doorbell));
            };
            let c: &'static LineCtx = Box::leak(Box::new(LineCtx { smmu: i, counters }));
            let f = handler_for(r).ok_or("no handler")?;
            if let Err(e) = route(v.intid, irq::Trigger::Edge, true, f, c) {
                let _ = irq::free_msi(&v);
                return Err(format!("{} LPI {}: {e}", r.name(), v.intid));
            }
            got.push((r, v, MsiCfg { cfg0, cfg1, cfg2 }));
            Ok(())
        };
        let r = one(Role::Evtq, &mut got).and_then(|()| one(Role::Gerror, &mut got));
        if let Err(e) = r {
            for (_, v, _) in &got {
                let _ = irq::free_msi(v);
            }
            return Err(e);
        }
        let mut msi = IrqMsi::default();
        for (r, v, cfg) in got {
            match r {
                Role::Evtq => msi.evtq = cfg,
                _ => msi.gerror = cfg,
            }
            mark(lines, r);
            WIRED.lock().push(Wired { smmu: i, name: r.name(), intid: v.intid, msi: true });
            done.push(format!("{} LPI {} (EventID {})", r.name(), v.intid, v.data));
        }
        Ok(msi)
    }

    /// Route every probed SMMU's interrupts to their handlers (MSIs when the SMMU and
    /// the DT allow, else the wired lines by name), enable them in the GIC and in
    /// SMMU_IRQ_CTRL. Returns what could not be wired (reported, never fatal).
    pub fn wire_all(p: &Platform, args: &BootArgs) -> Vec<String> {
        let mut problems = Vec::new();
        let mode = sync_mode(args).unwrap_or_else(|e| {
            problems.push(e);
            SyncMode::Poll
        });
        if !irq::ready() {
            problems.push("interrupts are off: SMMU events and errors are polled".into());
            return problems;
        }
        let smmus: Vec<(usize, String, &'static IrqCounters, bool)> = REGISTRY
            .lock()
            .smmus
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.node.clone(), e.dev.irq, e.dev.features.msi))
            .collect();
        for (i, node, counters, idr0_msi) in smmus {
            let Some(desc) = p.smmus.iter().find(|s| s.node == node) else { continue };
            let mut lines = IrqLines::default();
            let mut done: Vec<String> = Vec::new();
            let mut notes: Vec<String> = Vec::new();
            let (path, why_wired) = choose_path(idr0_msi, desc, p.gic.as_ref());
            let mut msi = IrqMsi::default();
            let mut msi_on = false;
            let mut path_text = match why_wired {
                Some(w) => format!("wired lines ({w})"),
                None if idr0_msi => "wired lines".into(),
                None => "wired lines (IDR0.MSI=0)".into(),
            };
            if let IrqPath::Msi { its, devid } = path {
                match setup_msis(i, its, devid, counters, &mut lines, &mut done) {
                    Ok(m) => {
                        msi = m;
                        msi_on = true;
                        path_text = format!("MSIs (IDR0.MSI=1, ITS {its:#x}, DeviceID {devid:#x})");
                    }
                    Err(e) => {
                        problems.push(format!("{node}: MSIs: {e}: falling back to wired lines"));
                        path_text = "wired lines (MSI setup failed)".into();
                    }
                }
            }
            for lp in plan_lines(desc, p.gic.as_ref()) {
                let (role, intid, trigger) = match lp.action {
                    Ok(x) => x,
                    Err(why) => {
                        let m = format!("`{}` {why}", lp.name);
                        if why.expected() {
                            notes.push(m);
                        } else {
                            problems.push(format!("{node}: {m}"));
                        }
                        continue;
                    }
                };
                // With MSIs, only what they do not cover still needs a wire.
                if msi_on && matches!(role, Role::Evtq | Role::Gerror | Role::Combined) {
                    notes.push(format!("`{}` unused: MSIs serve it", lp.name));
                    continue;
                }
                let Some(f) = handler_for(role) else { continue };
                let c: &'static LineCtx = Box::leak(Box::new(LineCtx { smmu: i, counters }));
                if let Err(e) = route(intid, trigger, false, f, c) {
                    problems.push(format!("{node}: `{}` INTID {intid}: {e}: polled", lp.name));
                    continue;
                }
                mark(&mut lines, role);
                WIRED.lock().push(Wired { smmu: i, name: role.name(), intid, msi: false });
                done.push(format!("{} INTID {intid}", role.name()));
            }
            let r = super::super::registry::with_smmu(i, |s| {
                s.set_sync_mode(mode);
                s.irq_msi = msi;
                s.enable_irqs(lines)
            });
            if let Some(Err(e)) = r {
                problems.push(format!("{node}: SMMU_IRQ_CTRL: {e}"));
            }
            let polled: Vec<&str> = [("eventq", lines.evtq), ("gerror", lines.gerror), ("cmdq-sync", lines.cmdq_sync)]
                .iter()
                .filter(|(_, on)| !on)
                .map(|(n, _)| *n)
                .collect();
            let mut s = format!("{node}: {path_text}: ");
            s += &if done.is_empty() { "nothing wired".into() } else { done.join(", ") };
            if !polled.is_empty() {
                s += &format!("; polled: {}", polled.join(", "));
            }
            for n in notes {
                s += &format!("; {n}");
            }
            SUMMARY.lock().push(s);
        }
        problems
    }

    /// One line per SMMU for the boot log: MSI or wired path, what is wired, polled, unused.
    pub fn summary() -> Vec<String> {
        SUMMARY.lock().clone()
    }

    /// The INTID that serves SMMU `smmu`'s `name` interrupt ("eventq", "gerror",
    /// "cmdq-sync"), if wired: its own line, the `combined` one, or its MSI's LPI.
    pub fn intid_of(smmu: usize, name: &str) -> Option<u32> {
        let want = Role::from_name(name)?;
        let w = WIRED.lock();
        let serves = |x: &&Wired| Role::from_name(x.name).is_some_and(|r| r.serves(want));
        w.iter().filter(|x| x.smmu == smmu).find(serves).map(|x| x.intid)
    }

    /// The line or MSI that serves SMMU `smmu`'s `name` interrupt, if any.
    pub fn wired(smmu: usize, name: &str) -> Option<Wired> {
        let want = Role::from_name(name)?;
        let w = WIRED.lock();
        w.iter().find(|x| x.smmu == smmu && Role::from_name(x.name).is_some_and(|r| r.serves(want))).cloned()
    }

    /// While alive, SMMU `smmu`'s event queue interrupt is off (SMMU_IRQ_CTRL), so events
    /// pile up in the queue as they would with nobody listening (tests of overflow).
    pub struct EvtqIrqPaused {
        smmu: usize,
        lines: Option<IrqLines>,
    }

    pub fn pause_evtq(smmu: usize) -> EvtqIrqPaused {
        let lines = super::super::registry::with_smmu(smmu, |s| {
            let lines = s.irq_lines;
            s.enable_irqs(IrqLines { evtq: false, ..lines }).ok().map(|()| lines)
        });
        EvtqIrqPaused { smmu, lines: lines.flatten() }
    }

    impl Drop for EvtqIrqPaused {
        fn drop(&mut self) {
            if let Some(lines) = self.lines {
                let _ = super::super::registry::with_smmu(self.smmu, |s| s.enable_irqs(lines));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn gic(phandle: Option<u32>, its: &[u32]) -> dt::Gic {
        dt::Gic {
            node: "/intc".into(),
            phandle,
            version: 3,
            dist_base: 0x800_0000,
            dist_size: 0x1_0000,
            redist: vec![],
            its: its
                .iter()
                .map(|&ph| dt::Its { node: "/intc/its".into(), base: 0x808_0000, size: 0x2_0000, phandle: ph })
                .collect(),
        }
    }

    fn smmu(lines: &[(&str, &[u32], Option<u32>)]) -> dt::Smmu {
        dt::Smmu {
            node: "/smmu".into(),
            phandle: None,
            base: 0x905_0000,
            size: 0x2_0000,
            enabled: true,
            coherent: true,
            irqs: lines.iter().map(|(n, c, _)| (n.to_string(), c.to_vec())).collect(),
            interrupt_parent: lines.first().and_then(|l| l.2),
            irq_parents: lines.iter().map(|l| l.2).collect(),
            msi_parent: None,
            msi_device_id: None,
            quirks: vec![],
        }
    }

    fn actions(s: &dt::Smmu, g: Option<&dt::Gic>) -> Vec<Result<(Role, u32, Trigger), Unwired>> {
        plan_lines(s, g).into_iter().map(|l| l.action).collect()
    }

    const G: Option<u32> = Some(0x8002);

    #[test]
    fn qemu_lines_by_name_priq_unused() {
        let s = smmu(&[
            ("eventq", &[0, 74, 1], G),
            ("priq", &[0, 75, 1], G),
            ("cmdq-sync", &[0, 76, 1], G),
            ("gerror", &[0, 77, 1], G),
        ]);
        let g = gic(G, &[]);
        assert_eq!(
            actions(&s, Some(&g)),
            vec![
                Ok((Role::Evtq, 106, Trigger::Edge)),
                Err(Unwired::PriNotSupported),
                Ok((Role::CmdqSync, 108, Trigger::Edge)),
                Ok((Role::Gerror, 109, Trigger::Edge)),
            ]
        );
        assert!(Unwired::PriNotSupported.to_string().contains("PRI"));
        assert!(Unwired::PriNotSupported.expected());
        // No GIC, or a GICv2: nothing is wired.
        assert!(actions(&s, None).iter().all(|a| a.is_err()));
        let mut v2 = g.clone();
        v2.version = 2;
        assert_eq!(actions(&s, Some(&v2))[0], Err(Unwired::NoGic));
    }

    #[test]
    fn lines_to_other_controllers_are_polled() {
        // GIC-looking cells whose parent is another controller, a parent without a
        // phandle, and a 2-cell mbigen specifier.
        let s = smmu(&[
            ("eventq", &[0, 74, 1], Some(0x44)),
            ("gerror", &[0, 77, 1], None),
            ("cmdq-sync", &[0x2dd, 1], Some(0x58)),
        ]);
        let g = gic(G, &[]);
        let a = actions(&s, Some(&g));
        assert_eq!(a[0], Err(Unwired::OtherController { parent: Some(0x44) }));
        assert_eq!(a[1], Err(Unwired::OtherController { parent: None }));
        assert_eq!(a[2], Err(Unwired::OtherController { parent: Some(0x58) }));
        assert!(a.iter().all(|x| x.as_ref().is_err_and(|w| !w.expected())));
        assert!(a[0].as_ref().unwrap_err().to_string().contains("0x44, not the GIC: polled"));
        // A GIC parent with cells that are not an SPI/PPI.
        let s = smmu(&[("eventq", &[2, 5, 1], G)]);
        assert_eq!(actions(&s, Some(&g))[0], Err(Unwired::NotSpiPpi { cells: vec![2, 5, 1] }));
        // A GIC without a phandle cannot be named, so nothing is its line.
        let s = smmu(&[("eventq", &[0, 74, 1], None)]);
        assert_eq!(actions(&s, Some(&gic(None, &[])))[0], Err(Unwired::OtherController { parent: None }));
    }

    #[test]
    fn combined_serves_eventq_and_gerror() {
        let g = gic(G, &[]);
        let s = smmu(&[("combined", &[0, 74, 4], G)]);
        assert_eq!(actions(&s, Some(&g)), vec![Ok((Role::Combined, 106, Trigger::Level))]);
        // Next to separate lines (not what the binding allows): combined wins for what it
        // serves, as in Linux; CMD_SYNC completion keeps its own line.
        let s = smmu(&[
            ("eventq", &[0, 74, 1], G),
            ("combined", &[0, 80, 4], G),
            ("priq", &[0, 75, 1], G),
            ("cmdq-sync", &[0, 76, 1], G),
            ("gerror", &[0, 77, 1], G),
        ]);
        assert_eq!(
            actions(&s, Some(&g)),
            vec![
                Err(Unwired::CombinedServes),
                Ok((Role::Combined, 112, Trigger::Level)),
                Err(Unwired::PriNotSupported),
                Ok((Role::CmdqSync, 108, Trigger::Edge)),
                Err(Unwired::CombinedServes),
            ]
        );
        assert!(Role::Combined.serves(Role::Evtq) && Role::Combined.serves(Role::Gerror));
        assert!(!Role::Combined.serves(Role::CmdqSync) && !Role::Combined.serves(Role::Priq));
        assert!(Role::Evtq.serves(Role::Evtq) && !Role::Evtq.serves(Role::Gerror));
        let s = smmu(&[("irq0", &[0, 74, 1], G)]);
        assert_eq!(actions(&s, Some(&g))[0], Err(Unwired::UnknownName));
    }

    #[test]
    fn msi_path_only_with_idr0_msi_and_an_its_devid() {
        let g = gic(G, &[0x8003]);
        let mut s = smmu(&[("eventq", &[0, 74, 1], G)]);
        assert_eq!(choose_path(false, &s, Some(&g)), (IrqPath::Wired, None));
        assert_eq!(choose_path(true, &s, Some(&g)).0, IrqPath::Wired);
        s.msi_parent = Some(0x8003);
        assert_eq!(
            choose_path(true, &s, Some(&g)),
            (IrqPath::Wired, Some("msi-parent has no DeviceID cell (#msi-cells = <1>)"))
        );
        s.msi_device_id = Some(0x10000);
        assert_eq!(choose_path(true, &s, Some(&g)), (IrqPath::Msi { its: 0x8003, devid: 0x10000 }, None));
        // QEMU's SMMU: IDR0.MSI=0, whatever the DT says.
        assert_eq!(choose_path(false, &s, Some(&g)), (IrqPath::Wired, None));
        // msi-parent that is not one of the GIC's ITSes (or no GIC).
        s.msi_parent = Some(0x99);
        assert_eq!(choose_path(true, &s, Some(&g)).0, IrqPath::Wired);
        s.msi_parent = Some(0x8003);
        assert_eq!(choose_path(true, &s, None).0, IrqPath::Wired);
    }

    #[test]
    fn msi_cfg_encoding() {
        // GITS_TRANSLATER of QEMU virt's ITS; EventID 1.
        assert_eq!(msi_cfg(0x809_0040, 1), Some((0x809_0040, 1, 0x1)));
        // ADDR is [51:2]: the top of a 52-bit space is fine, misaligned or wider is not.
        assert_eq!(msi_cfg(0x000f_ffff_ffff_fffc, 7).map(|c| c.0), Some(0x000f_ffff_ffff_fffc));
        assert_eq!(msi_cfg(0x809_0042, 1), None);
        assert_eq!(msi_cfg(1 << 52, 1), None);
        assert_eq!(msi_cfg(0, 1), None, "address 0 means no MSI");
        assert_eq!(IRQ_CFG0_ADDR_MASK, 0x000f_ffff_ffff_fffc);
    }

    #[test]
    fn crafted_dt_lines() {
        let p = dt::describe(include_bytes!("../../tests/dt/irq-parents.dtb")).unwrap();
        let g = p.gic.as_ref();
        let by = |n: &str| p.smmus.iter().find(|s| s.node == n).unwrap();
        let a = |n: &str| actions(by(n), g);
        assert_eq!(
            a("/iommu@1000000"),
            vec![Ok((Role::Evtq, 106, Trigger::Edge)), Ok((Role::Gerror, 109, Trigger::Edge))]
        );
        assert!(a("/iommu@2000000").iter().all(|x| matches!(x, Err(Unwired::OtherController { .. }))));
        // The sysirq's cells read as SPI 80, but its parent is not the GIC: polled.
        assert!(matches!(a("/bus@3000000/iommu@0")[0], Err(Unwired::OtherController { .. })));
        let x = a("/iommu@4000000");
        assert_eq!(x[0], Ok((Role::Evtq, 122, Trigger::Edge)));
        assert!(matches!(x[1], Err(Unwired::OtherController { .. })));
        assert_eq!(a("/iommu@5000000"), vec![Ok((Role::Combined, 132, Trigger::Level))]);
        // MSIs: with IDR0.MSI, iommu@5000000 uses the ITS with DeviceID 0x50000.
        let its = p.gic.as_ref().unwrap().its[0].phandle;
        assert_eq!(choose_path(true, by("/iommu@5000000"), g).0, IrqPath::Msi { its, devid: 0x50000 });
        assert_eq!(choose_path(true, by("/iommu@1000000"), g).0, IrqPath::Wired);
    }
}
