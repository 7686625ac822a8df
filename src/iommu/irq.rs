//! The SMMUs' wired interrupts, taken by name from the DT (`eventq`, `gerror`,
//! `cmdq-sync`; `priq` is not used): handlers that drain events as they arrive,
//! acknowledge global errors and count CMD_SYNC completions. Lines that are absent
//! (or not GIC specifiers) stay polled.

use super::registry::REGISTRY;
use super::smmuv3::device::{IrqCounters, IrqLines, SyncMode};
use crate::bootargs::BootArgs;
use crate::dt::Platform;
use crate::irq::{self, gic::DEFAULT_PRIORITY};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Evtq,
    Gerror,
    CmdqSync,
}

/// What a handler needs, leaked once per wired line (lives as long as the SMMU).
struct LineCtx {
    smmu: usize,
    counters: &'static IrqCounters,
}

/// One wired line of one SMMU, for the report and the tests.
#[derive(Debug, Clone)]
pub struct Wired {
    pub smmu: usize,
    pub name: &'static str,
    pub intid: u32,
}

pub static WIRED: spin::Mutex<Vec<Wired>> = spin::Mutex::new(Vec::new());

fn ctx(data: usize) -> &'static LineCtx {
    // SAFETY: `data` is a pointer from Box::leak(LineCtx) made in `wire_all`.
    unsafe { &*(data as *const LineCtx) }
}

/// Drain the event queue now, unless the interrupted code holds the registry (then
/// the events wait for its next `drain_events` or the next interrupt).
fn evtq_handler(_intid: u32, data: usize) {
    let c = ctx(data);
    c.counters.evtq.fetch_add(1, Ordering::SeqCst);
    if let Some(mut reg) = REGISTRY.try_lock()
        && let Some(e) = reg.smmus.get_mut(c.smmu)
    {
        e.dev.on_evtq_irq();
    }
}

fn gerror_handler(_intid: u32, data: usize) {
    let c = ctx(data);
    c.counters.gerror.fetch_add(1, Ordering::SeqCst);
    if let Some(mut reg) = REGISTRY.try_lock()
        && let Some(e) = reg.smmus.get_mut(c.smmu)
    {
        e.dev.on_gerror_irq();
    }
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
        Some(v) => Err(alloc::format!("smmu.sync={v}: expected poll or irq")),
    }
}

/// Route every probed SMMU's named lines to their handlers, enable them in the GIC and
/// in SMMU_IRQ_CTRL. Returns what could not be wired (reported, never fatal).
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
    let smmus: Vec<(usize, String, &'static IrqCounters)> =
        REGISTRY.lock().smmus.iter().enumerate().map(|(i, e)| (i, e.node.clone(), e.dev.irq)).collect();
    for (i, node, counters) in smmus {
        let Some(desc) = p.smmus.iter().find(|s| s.node == node) else { continue };
        let mut lines = IrqLines::default();
        for (name, cells) in &desc.irqs {
            let (line, handler): (Line, fn(u32, usize)) = match name.as_str() {
                "eventq" => (Line::Evtq, evtq_handler),
                "gerror" => (Line::Gerror, gerror_handler),
                "cmdq-sync" => (Line::CmdqSync, sync_handler),
                // PRI is not enabled; "combined" lines (one IRQ for all) are not handled yet.
                _ => continue,
            };
            let Some((intid, trigger)) = irq::gic_spec_to_intid(cells) else {
                problems.push(alloc::format!("{node}: `{name}` {cells:x?} is not a GIC SPI/PPI: polled"));
                continue;
            };
            let c: &'static LineCtx = Box::leak(Box::new(LineCtx { smmu: i, counters }));
            let r = irq::register_with(intid, handler, c as *const LineCtx as usize)
                .and_then(|()| irq::configure(intid, trigger, DEFAULT_PRIORITY))
                .and_then(|()| irq::enable(intid));
            if let Err(e) = r {
                problems.push(alloc::format!("{node}: `{name}` INTID {intid}: {e}: polled"));
                continue;
            }
            match line {
                Line::Evtq => lines.evtq = true,
                Line::Gerror => lines.gerror = true,
                Line::CmdqSync => lines.cmdq_sync = true,
            }
            WIRED.lock().push(Wired { smmu: i, name: leak_name(line), intid });
        }
        let r = super::registry::with_smmu(i, |s| {
            s.set_sync_mode(mode);
            s.enable_irqs(lines)
        });
        if let Some(Err(e)) = r {
            problems.push(alloc::format!("{node}: SMMU_IRQ_CTRL: {e}"));
        }
    }
    problems
}

fn leak_name(l: Line) -> &'static str {
    match l {
        Line::Evtq => "eventq",
        Line::Gerror => "gerror",
        Line::CmdqSync => "cmdq-sync",
    }
}

/// The INTID of SMMU `smmu`'s line `name`, if wired.
pub fn intid_of(smmu: usize, name: &str) -> Option<u32> {
    WIRED.lock().iter().find(|w| w.smmu == smmu && w.name == name).map(|w| w.intid)
}

/// While alive, SMMU `smmu`'s event queue interrupt is off (SMMU_IRQ_CTRL), so events
/// pile up in the queue as they would with nobody listening (tests of overflow).
pub struct EvtqIrqPaused {
    smmu: usize,
    lines: Option<IrqLines>,
}

pub fn pause_evtq(smmu: usize) -> EvtqIrqPaused {
    let lines = super::registry::with_smmu(smmu, |s| {
        let lines = s.irq_lines;
        s.enable_irqs(IrqLines { evtq: false, ..lines }).ok().map(|()| lines)
    });
    EvtqIrqPaused { smmu, lines: lines.flatten() }
}

impl Drop for EvtqIrqPaused {
    fn drop(&mut self) {
        if let Some(lines) = self.lines {
            let _ = super::registry::with_smmu(self.smmu, |s| s.enable_irqs(lines));
        }
    }
}
