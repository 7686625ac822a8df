//! Interrupt specifiers: finds the interrupt parent like Linux `of_irq_find_parent` and
//! splits `interrupts` / `interrupts-extended` into raw cells per interrupt.

use alloc::string::ToString;
use alloc::vec::Vec;

use alloc::format;
use alloc::string::String;

use super::addr::slice;
use super::tree::Tree;
use super::{Ctx, Problem};

/// GIC uses 3 or 4 cells; anything above this is a corrupt `#interrupt-cells`.
const MAX_INTERRUPT_CELLS: u32 = 8;

/// Decoded interrupts of one node.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Irqs {
    /// Raw specifier cells, one entry per interrupt, in property order.
    pub specs: Vec<alloc::vec::Vec<u32>>,
    /// Phandle of the interrupt controller (for `interrupts-extended`, of the first
    /// entry), `None` if the controller has no phandle.
    pub parent: Option<u32>,
    /// Phandle of each entry's interrupt controller, in `specs` order (they differ
    /// only with `interrupts-extended`).
    pub parents: Vec<Option<u32>>,
}

impl Tree<'_> {
    /// The node that owns `#interrupt-cells` for `n`'s `interrupts`: follow
    /// `interrupt-parent` where present, else the tree parent, until a node carries
    /// `#interrupt-cells`. Bounded by the node count, so a phandle cycle is reported.
    pub(crate) fn interrupt_parent(&self, n: usize) -> Result<Option<usize>, Problem> {
        let mut cur = n;
        for _ in 0..=self.nodes.len() {
            let next = match self.u32_prop(cur, "interrupt-parent")? {
                Some(ph) => Some(
                    self.by_phandle(ph).ok_or(Problem::UnresolvedPhandle { prop: "interrupt-parent", phandle: ph })?,
                ),
                None => self.parent(cur),
            };
            let Some(next) = next else { return Ok(None) };
            if self.has(next, "#interrupt-cells") {
                return Ok(Some(next));
            }
            cur = next;
        }
        Err(Problem::InterruptParentLoop)
    }

    fn interrupt_cells(&self, ctrl: usize) -> Result<u32, Problem> {
        match self.u32_prop(ctrl, "#interrupt-cells")? {
            Some(c) if (1..=MAX_INTERRUPT_CELLS).contains(&c) => Ok(c),
            Some(c) => {
                Err(Problem::AbsurdCells { bus: self.path(ctrl).to_string(), prop: "#interrupt-cells", value: c })
            }
            None => Err(Problem::MissingCells { prop: "#interrupt-cells", target: self.path(ctrl).to_string() }),
        }
    }

    /// Interrupts of `n`; `interrupts-extended` wins over `interrupts` as in Linux.
    pub(crate) fn irqs(&self, n: usize) -> Result<Irqs, Problem> {
        if let Some(ext) = self.cells_prop(n, "interrupts-extended")? {
            let mut out = Irqs::default();
            let mut pos = 0usize;
            while pos < ext.len() {
                let ph = ext.get(pos).copied().unwrap_or(0);
                let ctrl = self
                    .by_phandle(ph)
                    .ok_or(Problem::UnresolvedPhandle { prop: "interrupts-extended", phandle: ph })?;
                let nc = self.interrupt_cells(ctrl)? as usize;
                let start = pos.saturating_add(1);
                let spec = slice(&ext, start, nc)
                    .ok_or(Problem::BadLength { prop: "interrupts-extended", len: ext.len().saturating_mul(4) })?;
                if out.specs.is_empty() {
                    out.parent = Some(ph);
                }
                out.specs.push(spec.to_vec());
                out.parents.push(Some(ph));
                pos = start.saturating_add(nc);
            }
            return Ok(out);
        }
        let Some(raw) = self.cells_prop(n, "interrupts")? else {
            return Ok(Irqs::default());
        };
        let ctrl = self.interrupt_parent(n)?.ok_or(Problem::NoInterruptParent)?;
        let nc = self.interrupt_cells(ctrl)? as usize;
        if !raw.len().is_multiple_of(nc) {
            return Err(Problem::BadLength { prop: "interrupts", len: raw.len().saturating_mul(4) });
        }
        let specs: Vec<Vec<u32>> = raw.chunks_exact(nc).map(<[u32]>::to_vec).collect();
        let parent = self.phandle_of(ctrl);
        Ok(Irqs { parents: alloc::vec![parent; specs.len()], specs, parent })
    }
}

impl Ctx<'_, '_> {
    /// `specs` (node `n`'s decoded interrupts) paired with their names: `interrupt-names`,
    /// unless it does not match them one to one and the binding fixes an order (`positions`,
    /// e.g. the architected timer's), then that order; "irq<i>" for an entry left unnamed. A
    /// count mismatch is reported (only meaningful if the interrupts themselves decoded).
    pub(crate) fn named_irqs(&mut self, n: usize, specs: Vec<Vec<u32>>, positions: &[&str]) -> Vec<(String, Vec<u32>)> {
        let names = self.t.strings(n, "interrupt-names");
        let by_name = names.len() == specs.len() || positions.is_empty();
        if !names.is_empty() && names.len() != specs.len() && !specs.is_empty() {
            self.err(n, Problem::NamesMismatch { names: names.len(), irqs: specs.len() });
        }
        specs
            .into_iter()
            .enumerate()
            .map(|(i, cells)| {
                let name = if by_name { names.get(i) } else { positions.get(i) };
                (name.map_or_else(|| format!("irq{i}"), |s| String::from(*s)), cells)
            })
            .collect()
    }
}
