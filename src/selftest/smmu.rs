//! SMMUv3 hardware-layer suite: probe and bring-up state, the command queue (batching,
//! wrap, CMD_SYNC completion, illegal commands and recovery), STE programming.

use super::{Ctx, Test};
use crate::ensure;
use crate::harness::Outcome;
use crate::iommu::registry::{self, REGISTRY};
use crate::iommu::smmuv3::cmd::Command;
use crate::iommu::smmuv3::device::SmmuError;
use crate::iommu::smmuv3::event::CmdqError;
use crate::iommu::smmuv3::ste::{Ste, UpdateKind};

pub static TESTS: &[Test] = &[
    Test { suite: "smmu", name: "probe", run: probe },
    Test { suite: "smmu", name: "enabled_default_deny", run: enabled_default_deny },
    Test { suite: "smmu", name: "cmd_sync", run: cmd_sync },
    Test { suite: "smmu", name: "cmdq_wrap", run: cmdq_wrap },
    Test { suite: "smmu", name: "illegal_command", run: illegal_command },
    Test { suite: "smmu", name: "ste_update", run: ste_update },
    Test { suite: "smmu", name: "disabled_in_dt", run: disabled_in_dt },
    Test { suite: "smmu", name: "platform_masters_attached", run: platform_masters_attached },
];

fn need_smmu(c: &Ctx) -> Option<Outcome> {
    if registry::count() == 0 {
        let dt = c.platform.smmus.iter().filter(|s| s.enabled).count();
        if dt > 0 {
            return Some(Outcome::Fail(alloc::format!("{dt} SMMU(s) in the DT but none probed")));
        }
        return Some(Outcome::Skip("no SMMUv3 in this machine".into()));
    }
    None
}

fn probe(c: &Ctx) -> Outcome {
    if let Some(o) = need_smmu(c) {
        return o;
    }
    let reg = REGISTRY.lock();
    for e in &reg.smmus {
        let f = &e.dev.features;
        ensure!(f.stage1 || f.stage2, "{}: neither stage implemented", e.node);
        ensure!(f.sid_bits > 0, "{}: SIDSIZE 0", e.node);
        ensure!(f.oas_bits.is_some(), "{}: OAS unknown", e.node);
        if let Some(want) = c.args.get("expect.smmu.stages") {
            let got = match (f.stage1, f.stage2) {
                (true, true) => "12",
                (true, false) => "1",
                (false, true) => "2",
                _ => "",
            };
            ensure!(got == want, "{}: stages {got}, expected {want}", e.node);
        }
        if let Some(want) = c.args.get("smmu.strtab") {
            let two = e.dev.strtab.is_two_level();
            ensure!((want == "2level") == two, "{}: smmu.strtab={want} but 2-level={two}", e.node);
        }
    }
    Outcome::Pass
}

fn enabled_default_deny(c: &Ctx) -> Outcome {
    if let Some(o) = need_smmu(c) {
        return o;
    }
    let mut reg = REGISTRY.lock();
    for e in reg.smmus.iter_mut() {
        let ack = e.dev.cr0ack();
        ensure!(ack & 0xd == 0xd, "{}: CR0ACK {ack:#x}: SMMUEN|EVTQEN|CMDQEN not all set", e.node);
        ensure!(e.dev.gbpa() & (1 << 20) != 0, "{}: GBPA.ABORT clear: a disabled SMMU would pass traffic", e.node);
        // An unattached StreamID's STE aborts.
        let ste = match e.dev.read_ste(0x42) {
            Ok(s) => s,
            Err(err) => return Outcome::Fail(alloc::format!("{}: {err}", e.node)),
        };
        ensure!(ste == Ste::abort().words(), "{}: STE of unattached SID 0x42 is {ste:x?}, not abort", e.node);
    }
    Outcome::Pass
}

fn cmd_sync(c: &Ctx) -> Outcome {
    if let Some(o) = need_smmu(c) {
        return o;
    }
    registry::with_smmu(0, |s| {
        let before = s.stats;
        let batch = [Command::CfgiAll, Command::TlbiNsnhAll, Command::TlbiNhAsid { asid: 1, vmid: 0 }];
        if let Err(e) = s.run(&batch) {
            return Outcome::Fail(alloc::format!("{e}"));
        }
        let d = s.stats;
        // Three commands and their one CMD_SYNC, behind a single doorbell.
        ensure!(d.commands - before.commands == 4, "{} commands queued, expected 4", d.commands - before.commands);
        ensure!(d.syncs - before.syncs == 1, "{} CMD_SYNCs, expected 1", d.syncs - before.syncs);
        ensure!(
            d.prod_writes - before.prod_writes == 1,
            "{} CMDQ_PROD writes, expected 1",
            d.prod_writes - before.prod_writes
        );
        // The queue had room by the CONS cached at the last CMD_SYNC: one CONS read, the
        // poll that sees the CMD_SYNC consumed (QEMU consumes on the PROD write).
        if !s.sync_by_irq() {
            let reads = d.cons_reads - before.cons_reads;
            ensure!(reads == 1, "{reads} CMDQ_CONS reads for one batch, expected 1");
        }
        Outcome::Pass
    })
    .unwrap_or(Outcome::Fail("SMMU 0 vanished".into()))
}

fn cmdq_wrap(c: &Ctx) -> Outcome {
    if let Some(o) = need_smmu(c) {
        return o;
    }
    registry::with_smmu(0, |s| {
        let entries = 1usize << s.cmdq_log2();
        // Three laps of the queue in batches that straddle the wrap point.
        let batch: alloc::vec::Vec<Command> =
            (0..entries / 2 + 3).map(|i| Command::TlbiNhAsid { asid: i as u16, vmid: 0 }).collect();
        for round in 0..6 {
            if let Err(e) = s.run(&batch) {
                return Outcome::Fail(alloc::format!("round {round}: {e}"));
            }
        }
        // One batch bigger than the whole queue must also get through.
        let big: alloc::vec::Vec<Command> = (0..entries * 2 + 5).map(|_| Command::TlbiNsnhAll).collect();
        if let Err(e) = s.run(&big) {
            return Outcome::Fail(alloc::format!("over-sized batch: {e}"));
        }
        Outcome::Pass
    })
    .unwrap_or(Outcome::Fail("SMMU 0 vanished".into()))
}

fn illegal_command(c: &Ctx) -> Outcome {
    if let Some(o) = need_smmu(c) {
        return o;
    }
    registry::with_smmu(0, |s| {
        // Opcode 0x7f is not a command: the SMMU must stop with CERROR_ILL there.
        let r = s.run_raw([0xdead_0000_0000_007f, 0x1234]);
        match r {
            Err(SmmuError::CommandError { err: CmdqError::Illegal, cmd }) => {
                ensure!(cmd.0[0] & 0xff == 0x7f, "reported command {:x?} is not the one queued", cmd.0);
            }
            other => return Outcome::Fail(alloc::format!("expected CERROR_ILL, got {other:?}")),
        }
        // The queue recovered: a normal batch completes.
        if let Err(e) = s.run(&[Command::TlbiNsnhAll]) {
            return Outcome::Fail(alloc::format!("queue did not recover: {e}"));
        }
        ensure!(s.handle_gerror().is_empty(), "GERROR left active after recovery");
        Outcome::Pass
    })
    .unwrap_or(Outcome::Fail("SMMU 0 vanished".into()))
}

fn ste_update(c: &Ctx) -> Outcome {
    if let Some(o) = need_smmu(c) {
        return o;
    }
    registry::with_smmu(0, |s| {
        // A StreamID nothing uses: abort -> bypass -> abort, read back each time.
        let sid = (1u32 << s.strtab.sid_bits.min(16)) - 3;
        let l2_before = s.strtab.l2_tables();
        for (target, name) in [(Ste::bypass(), "bypass"), (Ste::abort(), "abort")] {
            match s.write_ste(sid, &target) {
                Ok(UpdateKind::NoChange) => return Outcome::Fail(alloc::format!("{name}: no change reported")),
                Ok(_) => {}
                Err(e) => return Outcome::Fail(alloc::format!("{name}: {e}")),
            }
            let got = match s.read_ste(sid) {
                Ok(v) => v,
                Err(e) => return Outcome::Fail(alloc::format!("{e}")),
            };
            ensure!(got == target.words(), "{name}: STE reads {got:x?}");
        }
        if s.strtab.is_two_level() {
            ensure!(s.strtab.l2_tables() <= l2_before + 1, "more than one level-2 table allocated for one SID");
        }
        // Beyond SIDSIZE is an error, not a wild write.
        if s.strtab.sid_bits < 32 {
            ensure!(s.write_ste(1 << s.strtab.sid_bits, &Ste::bypass()).is_err(), "SID beyond SIDSIZE accepted");
        }
        Outcome::Pass
    })
    .unwrap_or(Outcome::Fail("SMMU 0 vanished".into()))
}

/// An SMMU the DT marks disabled is not touched (and the report says why) unless
/// `smmu.enable_disabled=1`, in which case it is probed like any other.
fn disabled_in_dt(c: &Ctx) -> Outcome {
    let disabled: alloc::vec::Vec<&str> =
        c.platform.smmus.iter().filter(|s| !s.enabled).map(|s| s.node.as_str()).collect();
    if disabled.is_empty() {
        return Outcome::Skip("no SMMU is disabled in this DT".into());
    }
    let forced = c.args.flag("smmu.enable_disabled").ok().flatten().unwrap_or(false);
    let reg = REGISTRY.lock();
    for n in disabled {
        let probed = reg.smmus.iter().any(|e| e.node == n);
        let skipped = reg.skipped.iter().find(|s| s.node == n);
        if forced {
            ensure!(probed, "{n}: smmu.enable_disabled=1 but not probed");
        } else {
            ensure!(!probed, "{n}: disabled in the DT but probed");
            ensure!(
                skipped.is_some_and(|s| s.why.contains("disabled")),
                "{n}: not reported as skipped because disabled"
            );
        }
    }
    Outcome::Pass
}

/// Every enabled DT master (`iommus`) on a probed SMMU is in a default domain from
/// boot: each of its StreamIDs has a valid STE that translates (or bypasses with
/// iommu.passthrough=1), not the abort STE of an unknown device.
fn platform_masters_attached(c: &Ctx) -> Outcome {
    let masters: alloc::vec::Vec<&crate::dt::Master> = c.platform.masters.iter().filter(|m| m.enabled).collect();
    if masters.is_empty() {
        return Outcome::Skip("no platform masters in this DT".into());
    }
    let attached = crate::drivers::PLATFORM_MASTERS.lock().len();
    let mut reg = REGISTRY.lock();
    let mut checked = 0;
    for m in masters {
        let Some(e) = reg.smmus.iter_mut().find(|e| e.node == m.smmu) else { continue };
        for &sid in &m.stream_ids {
            let ste = match e.dev.read_ste(sid) {
                Ok(s) => s,
                Err(x) => return Outcome::Fail(alloc::format!("{}: SID {sid:#x}: {x}", m.node)),
            };
            let config = (ste[0] >> 1) & 7;
            let want = if crate::dma::passthrough() { 0b100 } else { 0b101 };
            ensure!(
                ste[0] & 1 == 1 && config == want,
                "{} SID {sid:#x}: STE config {config:#05b}, expected {want:#05b}",
                m.node
            );
            checked += 1;
        }
    }
    ensure!(checked > 0 && attached > 0, "no master behind a probed SMMU was attached");
    Outcome::Pass
}
