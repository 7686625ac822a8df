//! Core platform nodes: memory, reserved memory, /chosen and its console, GIC and PSCI.
//! Each pass records per-node problems in `Ctx::errors` and keeps going.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{ArchTimer, Chosen, Console, ConsoleKind, Ctx, Gic, Its, Problem, Psci, PsciMethod, Region, Reserved};

/// GICv2-compatible distributors (Linux irq-gic.c match table, the ones seen on arm64).
const GIC_V2: &[&str] = &["arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic", "arm,cortex-a7-gic"];
/// 8250-family UARTs handled by Linux's of_serial / 8250_dw.
const NS16550: &[&str] = &["ns16550a", "ns16550", "ns16450", "ns8250", "8250", "snps,dw-apb-uart"];

impl Ctx<'_, '_> {
    /// Every enabled `device_type = "memory"` node; empty ranges are dropped like Linux does.
    pub(crate) fn memory(&mut self) -> Vec<Region> {
        let t = self.t;
        let mut out = Vec::new();
        for n in t.indices() {
            if t.str_prop(n, "device_type") != Some("memory") || !t.is_enabled(n) {
                continue;
            }
            if let Some(regs) = self.ok(n, t.reg(n)) {
                out.extend(regs.into_iter().filter(|&(_, s)| s != 0).map(|(base, size)| Region { base, size }));
            }
        }
        out
    }

    /// `/memreserve/` entries, then static `/reserved-memory` children (disabled ones are
    /// ignored, as Linux does). Dynamic children (`size` only) are left out on purpose.
    pub(crate) fn reserved(&mut self) -> Vec<Reserved> {
        let t = self.t;
        let mut out: Vec<Reserved> = t
            .memreserve
            .iter()
            .map(|&(base, size)| Reserved { node: String::from("/memreserve/"), base, size, no_map: false })
            .collect();
        let Some(rm) = t.find_path("/reserved-memory") else {
            return out;
        };
        for &c in t.children(rm) {
            if !t.is_enabled(c) || !t.has(c, "reg") {
                continue;
            }
            let no_map = t.has(c, "no-map");
            if let Some(regs) = self.ok(c, t.reg(c)) {
                out.extend(regs.into_iter().map(|(base, size)| Reserved {
                    node: t.path(c).to_string(),
                    base,
                    size,
                    no_map,
                }));
            }
        }
        out
    }

    pub(crate) fn chosen(&mut self) -> Chosen {
        let t = self.t;
        let Some(c) = t.find_path("/chosen") else {
            return Chosen::default();
        };
        let stdout = t.str_prop(c, "stdout-path").or_else(|| t.str_prop(c, "linux,stdout-path"));
        Chosen { bootargs: t.str_prop(c, "bootargs").map(String::from), stdout_path: stdout.map(String::from) }
    }

    /// Resolves a path or an alias ("serial2", "serial2/child"), like Linux
    /// `of_find_node_opts_by_path`; `:options` must already be stripped.
    fn resolve(&self, spec: &str) -> Option<usize> {
        let t = self.t;
        if spec.starts_with('/') {
            return t.find_path(spec);
        }
        let (alias, rest) = match spec.split_once('/') {
            Some((a, r)) => (a, Some(r)),
            None => (spec, None),
        };
        let aliases = t.find_path("/aliases")?;
        let target = t.str_prop(aliases, alias)?;
        let mut full = String::from(target);
        if let Some(r) = rest {
            full.push('/');
            full.push_str(r);
        }
        t.find_path(&full)
    }

    /// The boot console: `stdout-path` if it resolves, else the first enabled `arm,pl011`.
    pub(crate) fn console(&mut self, chosen: &Chosen) -> Option<Console> {
        let t = self.t;
        if let Some(sp) = &chosen.stdout_path {
            let spec = sp.split(':').next().unwrap_or("");
            match self.resolve(spec) {
                Some(n) => return self.console_at(n),
                None => {
                    let node = t.find_path("/chosen").unwrap_or(0);
                    self.err(node, Problem::Unresolved { prop: "stdout-path", value: sp.clone() });
                }
            }
        }
        let pl011 = t.indices().find(|&n| t.is_compatible(n, "arm,pl011") && t.is_enabled(n))?;
        self.console_at(pl011)
    }

    fn console_at(&mut self, n: usize) -> Option<Console> {
        let t = self.t;
        let (base, size) = self.ok(n, t.reg0(n))?;
        let compat = t.strings(n, "compatible");
        let mut kind = ConsoleKind::Unknown(compat.first().copied().unwrap_or("").to_string());
        for c in &compat {
            if matches!(*c, "arm,pl011" | "arm,sbsa-uart") {
                kind = ConsoleKind::Pl011;
            } else if NS16550.contains(c) {
                let reg_shift = self.ok(n, t.u32_prop(n, "reg-shift")).flatten().unwrap_or(0);
                let reg_io_width = self.ok(n, t.u32_prop(n, "reg-io-width")).flatten().unwrap_or(1);
                kind = ConsoleKind::Ns16550 { reg_shift, reg_io_width };
            } else if c.starts_with("fsl,imx") && c.ends_with("-lpuart") {
                kind = ConsoleKind::ImxLpuart;
            } else {
                continue;
            }
            break;
        }
        Some(Console { node: t.path(n).to_string(), kind, base, size })
    }

    /// The first enabled GICv3 or GICv2 distributor, with GICv3 redistributors and ITSes.
    pub(crate) fn gic(&mut self) -> Option<Gic> {
        let t = self.t;
        let (n, version) = t.indices().find_map(|n| {
            if !t.is_enabled(n) {
                None
            } else if t.is_compatible(n, "arm,gic-v3") {
                Some((n, 3u8))
            } else if GIC_V2.iter().any(|c| t.is_compatible(n, c)) {
                Some((n, 2u8))
            } else {
                None
            }
        })?;
        let regs = self.ok(n, t.reg(n))?;
        let &(dist_base, dist_size) = regs.first()?;
        let mut redist = Vec::new();
        let mut its = Vec::new();
        if version == 3 {
            let count = self.ok(n, t.u32_prop(n, "#redistributor-regions")).flatten().unwrap_or(1) as usize;
            redist = regs.iter().skip(1).take(count).map(|&(base, size)| Region { base, size }).collect();
            if redist.len() < count {
                self.err(n, Problem::BadLength { prop: "reg", len: regs.len() });
            }
            for &c in t.children(n) {
                if !t.is_compatible(c, "arm,gic-v3-its") || !t.is_enabled(c) {
                    continue;
                }
                if let Some((base, size)) = self.ok(c, t.reg0(c)) {
                    let phandle = t.phandle_of(c).unwrap_or(0);
                    its.push(Its { node: t.path(c).to_string(), base, size, phandle });
                }
            }
        }
        Some(Gic { node: t.path(n).to_string(), phandle: t.phandle_of(n), version, dist_base, dist_size, redist, its })
    }

    /// PSCI conduit from the first `arm,psci*` node (normally `/psci`).
    pub(crate) fn psci(&mut self) -> Option<Psci> {
        let t = self.t;
        let n = t.indices().find(|&n| t.strings(n, "compatible").iter().any(|c| c.starts_with("arm,psci")))?;
        match t.str_prop(n, "method") {
            Some("hvc") => Some(Psci { method: PsciMethod::Hvc }),
            Some("smc") => Some(Psci { method: PsciMethod::Smc }),
            Some(other) => {
                let value = other.to_string();
                self.err(n, Problem::BadValue { prop: "method", value });
                None
            }
            None => {
                self.err(n, Problem::MissingProp("method"));
                None
            }
        }
    }

    /// The first enabled architected-timer node. Its `interrupts` are named by
    /// `interrupt-names` when that matches them one to one, else by binding position.
    pub(crate) fn timer(&mut self) -> Option<ArchTimer> {
        const POSITIONS: [&str; 5] = ["sec-phys", "phys", "virt", "hyp-phys", "hyp-virt"];
        let t = self.t;
        let n = t.indices().find(|&n| {
            t.is_enabled(n) && (t.is_compatible(n, "arm,armv8-timer") || t.is_compatible(n, "arm,armv7-timer"))
        })?;
        let irqs = self.ok(n, t.irqs(n)).unwrap_or_default();
        let named = self.named_irqs(n, irqs.specs, &POSITIONS);
        Some(ArchTimer { node: t.path(n).to_string(), irqs: named, interrupt_parent: irqs.parent })
    }

    /// MPIDR affinity values of the enabled `/cpus/cpu@*` nodes, in DT order.
    pub(crate) fn cpus(&mut self) -> Vec<u64> {
        let t = self.t;
        let Some(cpus) = t.find_path("/cpus") else { return Vec::new() };
        let na = match self.ok(cpus, t.addr_cells(cpus)) {
            Some(n) => n as usize,
            None => return Vec::new(),
        };
        let mut out = Vec::new();
        for &c in t.children(cpus) {
            if t.str_prop(c, "device_type") != Some("cpu") || !t.is_enabled(c) {
                continue;
            }
            let Some(cells) = self.ok(c, t.cells_prop(c, "reg")).flatten() else { continue };
            match (na, cells.as_slice()) {
                (1, [a, ..]) => out.push(u64::from(*a)),
                (2, [hi, lo, ..]) => out.push((u64::from(*hi) << 32) | u64::from(*lo)),
                _ => self.err(c, Problem::BadLength { prop: "reg", len: cells.len().saturating_mul(4) }),
            }
        }
        out
    }
}
