//! The IOMMU registry: every SMMUv3 probed from the platform description, found by
//! DT node or phandle. Domains, groups and attach build on it (see `domain`).

use super::smmuv3::device::{Options, SmmuError, SmmuV3, StrtabChoice};
use crate::bootargs::BootArgs;
use crate::dt::Platform;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

pub struct SmmuEntry {
    pub node: String,
    pub phandle: Option<u32>,
    pub dev: SmmuV3,
}

/// Why an SMMU in the DT is not in use.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub node: String,
    pub why: String,
}

pub struct Registry {
    pub smmus: Vec<SmmuEntry>,
    pub skipped: Vec<Skipped>,
}

pub static REGISTRY: Mutex<Registry> = Mutex::new(Registry { smmus: Vec::new(), skipped: Vec::new() });

/// SMMU options from `smmu.*` boot arguments; unknown values are reported, not ignored.
pub fn options(args: &BootArgs) -> Result<Options, String> {
    let mut o = Options::default();
    let small = |k: &str| -> Result<Option<u8>, String> {
        match args.number(k) {
            Ok(Some(v)) if (1..=19).contains(&v) => Ok(Some(v as u8)),
            Ok(Some(v)) => Err(alloc::format!("{k}={v}: expected 1..19")),
            Ok(None) => Ok(None),
            Err(v) => Err(alloc::format!("{k}={v}: not a number")),
        }
    };
    o.cmdq_log2 = small("smmu.cmdq_log2")?;
    o.evtq_log2 = small("smmu.evtq_log2")?;
    o.strtab = match args.get("smmu.strtab") {
        None | Some("auto") => StrtabChoice::Auto,
        Some("linear") => StrtabChoice::Linear,
        Some("2level") => StrtabChoice::TwoLevel,
        Some(v) => return Err(alloc::format!("smmu.strtab={v}: expected auto, linear or 2level")),
    };
    o.force_non_coherent =
        args.flag("smmu.noncoherent").map_err(|v| alloc::format!("smmu.noncoherent={v}"))?.unwrap_or(false);
    Ok(o)
}

/// Probe every `arm,smmu-v3` of the platform. Disabled ones are skipped unless
/// `smmu.enable_disabled=1` (boards ship them disabled when Linux has no use for them).
pub fn probe_all(p: &Platform, args: &BootArgs) -> Result<(), String> {
    let opts = options(args)?;
    let force =
        args.flag("smmu.enable_disabled").map_err(|v| alloc::format!("smmu.enable_disabled={v}"))?.unwrap_or(false);
    let ril = args.flag("smmu.ril").map_err(|v| alloc::format!("smmu.ril={v}"))?.unwrap_or(true);
    super::domain::NO_RIL.store(!ril, core::sync::atomic::Ordering::SeqCst);
    let mut reg = REGISTRY.lock();
    for s in &p.smmus {
        if !s.enabled && !force {
            reg.skipped.push(Skipped {
                node: s.node.clone(),
                why: "status is disabled (smmu.enable_disabled=1 overrides)".into(),
            });
            continue;
        }
        if s.size < 0x20000 {
            reg.skipped.push(Skipped {
                node: s.node.clone(),
                why: alloc::format!("reg size {:#x} < two 64 KiB pages", s.size),
            });
            continue;
        }
        // SAFETY: the DT says an SMMUv3 register frame of at least two pages lives at
        // `base`; the CPU map covers it as device memory and nothing else drives it.
        match unsafe { SmmuV3::probe(&s.node, s.base, s.coherent, &s.quirks, &opts) } {
            Ok(dev) => reg.smmus.push(SmmuEntry { node: s.node.clone(), phandle: s.phandle, dev }),
            Err(e) => reg.skipped.push(Skipped { node: s.node.clone(), why: alloc::format!("{e}") }),
        }
    }
    Ok(())
}

/// Index of the probed SMMU with this phandle.
pub fn by_phandle(ph: u32) -> Option<usize> {
    REGISTRY.lock().smmus.iter().position(|s| s.phandle == Some(ph))
}

/// Run `f` on SMMU `i`.
pub fn with_smmu<R>(i: usize, f: impl FnOnce(&mut SmmuV3) -> R) -> Option<R> {
    let mut reg = REGISTRY.lock();
    reg.smmus.get_mut(i).map(|e| f(&mut e.dev))
}

/// `with_smmu` for interrupt context: None when the registry is locked (the interrupted
/// code may hold it: waiting would never end), Some(None) when there is no SMMU `i`.
pub fn try_with_smmu<R>(i: usize, f: impl FnOnce(&mut SmmuV3) -> R) -> Option<Option<R>> {
    let mut reg = REGISTRY.try_lock()?;
    Some(reg.smmus.get_mut(i).map(|e| f(&mut e.dev)))
}

pub fn count() -> usize {
    REGISTRY.lock().smmus.len()
}

pub type ProbeError = SmmuError;
