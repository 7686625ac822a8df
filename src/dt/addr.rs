//! Property decoding and bus address translation (`reg` through every parent's `ranges`).
//! Follows Linux `drivers/of/address.c`: cell counts walk up the tree, empty `ranges` is identity.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::Problem;
use super::tree::Tree;

/// `OF_MAX_ADDR_CELLS` in Linux: more address cells than this is not a real bus.
pub(crate) const MAX_ADDR_CELLS: u32 = 4;
/// Sizes wider than 128 bits cannot be represented; real buses use 1 or 2.
pub(crate) const MAX_SIZE_CELLS: u32 = 4;

/// A property value as big-endian cells; `None` if its length is not a multiple of 4.
pub(crate) fn cells(value: &[u8]) -> Option<Vec<u32>> {
    if !value.len().is_multiple_of(4) {
        return None;
    }
    Some(
        value
            .chunks_exact(4)
            // chunks_exact(4) always yields 4 bytes, so the conversion cannot fail.
            .map(|c| <[u8; 4]>::try_from(c).map_or(0, u32::from_be_bytes))
            .collect(),
    )
}

/// Folds up to four cells (most significant first) into one number, like `of_read_number`.
pub(crate) fn number(cells: &[u32]) -> u128 {
    cells.iter().fold(0u128, |acc, &c| (acc << 32) | u128::from(c))
}

/// `cells[start..start+n]` without panicking.
pub(crate) fn slice(cells: &[u32], start: usize, n: usize) -> Option<&[u32]> {
    cells.get(start..start.checked_add(n)?)
}

impl Tree<'_> {
    /// A single-u32 property. Linux's `of_property_read_u32` accepts longer values and
    /// reads the first cell; shorter ones are an error.
    pub(crate) fn u32_prop(&self, n: usize, name: &'static str) -> Result<Option<u32>, Problem> {
        match self.prop(n, name) {
            None => Ok(None),
            Some(v) => match v.get(..4) {
                Some(&[a, b, c, d]) => Ok(Some(u32::from_be_bytes([a, b, c, d]))),
                _ => Err(Problem::BadLength { prop: name, len: v.len() }),
            },
        }
    }

    /// A property as cells, with a typed error when its length is not a multiple of 4.
    pub(crate) fn cells_prop(&self, n: usize, name: &'static str) -> Result<Option<Vec<u32>>, Problem> {
        match self.prop(n, name) {
            None => Ok(None),
            Some(v) => cells(v).map(Some).ok_or(Problem::BadLength { prop: name, len: v.len() }),
        }
    }

    /// The first string of a string(-list) property.
    pub(crate) fn str_prop(&self, n: usize, name: &str) -> Option<&str> {
        self.strings(n, name).into_iter().next()
    }

    /// All strings of a string-list property; non-UTF-8 entries are dropped.
    pub(crate) fn strings(&self, n: usize, name: &str) -> Vec<&str> {
        let Some(v) = self.prop(n, name) else {
            return Vec::new();
        };
        let v = v.strip_suffix(&[0]).unwrap_or(v);
        if v.is_empty() {
            return Vec::new();
        }
        v.split(|&b| b == 0).filter_map(|s| core::str::from_utf8(s).ok()).collect()
    }

    pub(crate) fn is_compatible(&self, n: usize, compat: &str) -> bool {
        self.strings(n, "compatible").contains(&compat)
    }

    /// `status` absent, "okay" or "ok" (the legacy spelling Linux also accepts).
    pub(crate) fn is_enabled(&self, n: usize) -> bool {
        match self.prop(n, "status") {
            None => true,
            Some(_) => matches!(self.str_prop(n, "status"), Some("okay" | "ok")),
        }
    }

    /// `dma-coherent` is inherited like Linux's `of_dma_is_coherent` (nearest of
    /// `dma-coherent`/`dma-noncoherent` on the node or an ancestor; default non-coherent).
    pub(crate) fn is_coherent(&self, n: usize) -> bool {
        let mut cur = Some(n);
        while let Some(c) = cur {
            if self.has(c, "dma-coherent") {
                return true;
            }
            if self.has(c, "dma-noncoherent") {
                return false;
            }
            cur = self.parent(c);
        }
        false
    }

    /// `#address-cells` that applies to children of `bus`. Linux's `of_bus_n_addr_cells`
    /// still walks up to ancestors (deprecated, but real DTBs rely on it); default 2.
    pub(crate) fn addr_cells(&self, bus: usize) -> Result<u32, Problem> {
        self.bus_cells(bus, "#address-cells", 2, MAX_ADDR_CELLS)
    }

    /// `#size-cells` for children of `bus`; default 1, same walk as `addr_cells`.
    pub(crate) fn size_cells(&self, bus: usize) -> Result<u32, Problem> {
        self.bus_cells(bus, "#size-cells", 1, MAX_SIZE_CELLS)
    }

    fn bus_cells(&self, bus: usize, name: &'static str, default: u32, max: u32) -> Result<u32, Problem> {
        let mut cur = Some(bus);
        while let Some(c) = cur {
            if let Some(v) = self.u32_prop(c, name)? {
                if v > max {
                    return Err(Problem::AbsurdCells { bus: self.path(c).to_string(), prop: name, value: v });
                }
                return Ok(v);
            }
            cur = self.parent(c);
        }
        Ok(default)
    }

    fn is_pci_bus(&self, bus: usize) -> bool {
        self.str_prop(bus, "device_type") == Some("pci")
    }

    /// Translates `addr`, expressed in `bus`'s child address space, to a CPU physical
    /// address by applying `ranges` of `bus` and every ancestor up to the root.
    pub(crate) fn translate(&self, bus: usize, addr: u128) -> Result<u64, Problem> {
        let mut bus = bus;
        let mut addr = addr;
        let mut na = self.addr_cells(bus)?;
        let mut ns = self.size_cells(bus)?;
        // The root's child address space is the CPU's physical address space.
        while let Some(parent) = self.parent(bus) {
            let pna = self.addr_cells(parent)?;
            let pns = self.size_cells(parent)?;
            let Some(ranges) = self.cells_prop(bus, "ranges")? else {
                return Err(Problem::NoRanges { bus: self.path(bus).to_string() });
            };
            if !ranges.is_empty() {
                addr = self.translate_one(bus, &ranges, addr, na, pna, ns)?;
            }
            bus = parent;
            na = pna;
            ns = pns;
        }
        u64::try_from(addr).map_err(|_| Problem::AddressTooWide(addr))
    }

    /// One level of `of_translate_one`: find the `ranges` entry containing `addr`.
    fn translate_one(
        &self,
        bus: usize,
        ranges: &[u32],
        addr: u128,
        na: u32,
        pna: u32,
        ns: u32,
    ) -> Result<u128, Problem> {
        let (na, pna, ns) = (na as usize, pna as usize, ns as usize);
        let entry = na.saturating_add(pna).saturating_add(ns);
        if entry == 0 || !ranges.len().is_multiple_of(entry) {
            return Err(Problem::BadLength { prop: "ranges", len: ranges.len().saturating_mul(4) });
        }
        let pci = self.is_pci_bus(bus) && na == 3;
        for e in ranges.chunks_exact(entry) {
            let child = slice(e, 0, na).unwrap_or(&[]);
            let parent = number(slice(e, na, pna).unwrap_or(&[]));
            let size = number(slice(e, na.saturating_add(pna), ns).unwrap_or(&[]));
            let (base, a) = if pci {
                // of_bus_pci_map: the space code (phys.hi bits 24-25) must match and the
                // offset is computed on the 64-bit PCI address only.
                let space = |c: u32| c & 0x0300_0000;
                let hi_addr = (addr >> 64) as u32;
                if space(child.first().copied().unwrap_or(0)) != space(hi_addr) {
                    continue;
                }
                (number(child.get(1..).unwrap_or(&[])), addr & u128::from(u64::MAX))
            } else {
                (number(child), addr)
            };
            if let Some(off) = a.checked_sub(base).filter(|&off| off < size) {
                return parent.checked_add(off).ok_or(Problem::AddressTooWide(addr));
            }
        }
        Err(Problem::NotInRanges { bus: self.path(bus).to_string(), addr })
    }

    /// The node's `reg` entries as CPU physical (base, size) pairs.
    pub(crate) fn reg(&self, n: usize) -> Result<Vec<(u64, u64)>, Problem> {
        let bus = self.parent(n).ok_or(Problem::MissingProp("reg"))?;
        let Some(raw) = self.prop(n, "reg") else {
            return Err(Problem::MissingProp("reg"));
        };
        let na = self.addr_cells(bus)? as usize;
        let ns = self.size_cells(bus)? as usize;
        let c = cells(raw).ok_or(Problem::BadLength { prop: "reg", len: raw.len() })?;
        let entry = na.saturating_add(ns);
        if entry == 0 || c.is_empty() || !c.len().is_multiple_of(entry) {
            return Err(Problem::RegLength { len: raw.len(), na: na as u32, ns: ns as u32 });
        }
        let mut out = Vec::new();
        for e in c.chunks_exact(entry) {
            let a = number(slice(e, 0, na).unwrap_or(&[]));
            let s = number(slice(e, na, ns).unwrap_or(&[]));
            let size = u64::try_from(s).map_err(|_| Problem::AddressTooWide(s))?;
            out.push((self.translate(bus, a)?, size));
        }
        Ok(out)
    }

    /// The first `reg` entry.
    pub(crate) fn reg0(&self, n: usize) -> Result<(u64, u64), Problem> {
        self.reg(n)?.first().copied().ok_or(Problem::MissingProp("reg"))
    }
}
