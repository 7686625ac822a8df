//! Flattened-devicetree walker: turns a DTB into an arena of nodes with parent links and full paths.
//! Every read is bounds-checked, so a corrupted blob yields a `DtError`, never a panic.

use alloc::collections::BTreeMap;
use alloc::collections::btree_map::Entry;
use alloc::string::String;
use alloc::vec::Vec;

use super::DtError;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Size of the v17 header; older headers are shorter but we only accept v16+ whose
/// fields up to `size_dt_strings` are present (v16 lacks `size_dt_struct`).
const HEADER_V16_LEN: usize = 36;
/// Linux's `FDT_MAX_DEPTH`; also bounds the memory spent on full paths (depth^2).
pub(crate) const MAX_DEPTH: usize = 64;

/// One property: name from the strings block, raw big-endian value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prop<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    pub name: &'a str,
    /// Full path ("/", "/soc/serial@1000"), as Linux prints with `%pOF`.
    pub path: String,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub props: Vec<Prop<'a>>,
}

/// The whole tree; node 0 is the root.
#[derive(Debug, Clone)]
pub(crate) struct Tree<'a> {
    pub nodes: Vec<Node<'a>>,
    pub phandles: BTreeMap<u32, usize>,
    /// `/memreserve/` entries (address, size) from the memory reservation block.
    pub memreserve: Vec<(u64, u64)>,
    /// Nodes whose phandle was already taken by an earlier node (the earlier one wins).
    pub duplicate_phandles: Vec<(usize, u32)>,
}

fn be32(data: &[u8], off: usize) -> Option<u32> {
    let bytes = data.get(off..off.checked_add(4)?)?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

fn be64(data: &[u8], off: usize) -> Option<u64> {
    let bytes = data.get(off..off.checked_add(8)?)?;
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

/// A NUL-terminated string starting at `off` that must end inside `data`.
fn cstr(data: &[u8], off: usize) -> Option<&[u8]> {
    let rest = data.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    rest.get(..end)
}

fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// `start..start+len` of `data`, or the error naming the block that does not fit.
fn block<'a>(data: &'a [u8], start: u32, len: u32, what: &'static str) -> Result<&'a [u8], DtError> {
    let start = start as usize;
    let end = start.checked_add(len as usize).ok_or(DtError::BadBlock(what))?;
    data.get(start..end).ok_or(DtError::BadBlock(what))
}

impl<'a> Tree<'a> {
    pub(crate) fn parse(dtb: &'a [u8]) -> Result<Self, DtError> {
        // Magic first, so a non-DTB file is reported as such even when it is tiny.
        if be32(dtb, 0).is_some_and(|m| m != FDT_MAGIC) {
            return Err(DtError::BadMagic);
        }
        // The fdt crate validates the header and that the buffer holds `totalsize`; its
        // node walker however panics on corrupt structure blocks (slice indexing, `expect`,
        // a fixed 64-entry parent stack) and has no parent links, so we walk ourselves.
        fdt::Fdt::new(dtb).map_err(|e| match e {
            fdt::FdtError::BadMagic => DtError::BadMagic,
            fdt::FdtError::BadPtr | fdt::FdtError::BufferTooSmall => DtError::Truncated,
        })?;
        let total = be32(dtb, 4).ok_or(DtError::Truncated)? as usize;
        let blob = dtb.get(..total).ok_or(DtError::Truncated)?;
        if blob.len() < HEADER_V16_LEN {
            return Err(DtError::Truncated);
        }
        let off_struct = be32(blob, 8).ok_or(DtError::Truncated)?;
        let off_strings = be32(blob, 12).ok_or(DtError::Truncated)?;
        let off_rsv = be32(blob, 16).ok_or(DtError::Truncated)?;
        let version = be32(blob, 20).ok_or(DtError::Truncated)?;
        let last_comp = be32(blob, 24).ok_or(DtError::Truncated)?;
        if version < 16 || last_comp > 17 {
            return Err(DtError::UnsupportedVersion(version));
        }
        let size_strings = be32(blob, 32).ok_or(DtError::Truncated)?;
        let size_struct = if version >= 17 {
            be32(blob, 36).ok_or(DtError::Truncated)?
        } else {
            // v16 has no size field: the structure block runs to the end of the blob.
            (total as u32).checked_sub(off_struct).ok_or(DtError::BadBlock("structure"))?
        };
        let structs = block(blob, off_struct, size_struct, "structure")?;
        let strings = block(blob, off_strings, size_strings, "strings")?;

        let memreserve = parse_memreserve(blob, off_rsv as usize)?;
        let mut tree =
            Tree { nodes: Vec::new(), phandles: BTreeMap::new(), memreserve, duplicate_phandles: Vec::new() };
        tree.walk(structs, strings)?;
        tree.index_phandles();
        Ok(tree)
    }

    fn walk(&mut self, structs: &'a [u8], strings: &'a [u8]) -> Result<(), DtError> {
        let mut pos = 0usize;
        let mut stack: Vec<usize> = Vec::new();
        loop {
            let token = be32(structs, pos).ok_or(DtError::BadStructure(pos, "missing FDT_END"))?;
            let at = pos;
            pos = pos.checked_add(4).ok_or(DtError::Truncated)?;
            match token {
                FDT_BEGIN_NODE => {
                    let raw = cstr(structs, pos).ok_or(DtError::BadStructure(at, "unterminated node name"))?;
                    let name =
                        core::str::from_utf8(raw).map_err(|_| DtError::BadStructure(at, "node name not UTF-8"))?;
                    pos = align4(pos.checked_add(raw.len()).and_then(|p| p.checked_add(1)).ok_or(DtError::Truncated)?)
                        .ok_or(DtError::Truncated)?;
                    let parent = stack.last().copied();
                    if parent.is_none() && !self.nodes.is_empty() {
                        return Err(DtError::BadStructure(at, "second root node"));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(DtError::TooDeep);
                    }
                    let path = match parent.and_then(|p| self.nodes.get(p)) {
                        None => String::from("/"),
                        Some(pn) => {
                            let mut s = String::new();
                            s.push_str(&pn.path);
                            if pn.parent.is_some() {
                                s.push('/');
                            }
                            s.push_str(name);
                            s
                        }
                    };
                    let idx = self.nodes.len();
                    self.nodes.push(Node { name, path, parent, children: Vec::new(), props: Vec::new() });
                    if let Some(pn) = parent.and_then(|p| self.nodes.get_mut(p)) {
                        pn.children.push(idx);
                    }
                    stack.push(idx);
                }
                FDT_END_NODE => {
                    stack.pop().ok_or(DtError::BadStructure(at, "FDT_END_NODE without node"))?;
                }
                FDT_PROP => {
                    let len = be32(structs, pos).ok_or(DtError::Truncated)? as usize;
                    let nameoff =
                        be32(structs, pos.checked_add(4).ok_or(DtError::Truncated)?).ok_or(DtError::Truncated)?;
                    pos = pos.checked_add(8).ok_or(DtError::Truncated)?;
                    let end = pos.checked_add(len).ok_or(DtError::Truncated)?;
                    let value = structs.get(pos..end).ok_or(DtError::BadStructure(at, "property runs past block"))?;
                    pos = align4(end).ok_or(DtError::Truncated)?;
                    let raw =
                        cstr(strings, nameoff as usize).ok_or(DtError::BadStructure(at, "bad property name offset"))?;
                    let name =
                        core::str::from_utf8(raw).map_err(|_| DtError::BadStructure(at, "property name not UTF-8"))?;
                    let cur = stack.last().copied().ok_or(DtError::BadStructure(at, "property outside a node"))?;
                    if let Some(n) = self.nodes.get_mut(cur) {
                        n.props.push(Prop { name, value });
                    }
                }
                FDT_NOP => {}
                FDT_END => {
                    if !stack.is_empty() || self.nodes.is_empty() {
                        return Err(DtError::BadStructure(at, "FDT_END inside a node or before root"));
                    }
                    return Ok(());
                }
                _ => return Err(DtError::BadStructure(at, "unknown token")),
            }
        }
    }

    fn index_phandles(&mut self) {
        for (idx, node) in self.nodes.iter().enumerate() {
            let ph = node
                .props
                .iter()
                .find(|p| p.name == "phandle")
                .or_else(|| node.props.iter().find(|p| p.name == "linux,phandle"))
                .and_then(|p| be32(p.value, 0));
            // 0 and ~0 are not valid phandles per the DT spec.
            if let Some(ph) = ph.filter(|&v| v != 0 && v != u32::MAX) {
                match self.phandles.entry(ph) {
                    Entry::Occupied(_) => self.duplicate_phandles.push((idx, ph)),
                    Entry::Vacant(v) => {
                        v.insert(idx);
                    }
                }
            }
        }
    }

    pub(crate) fn node(&self, idx: usize) -> Option<&Node<'a>> {
        self.nodes.get(idx)
    }

    pub(crate) fn path(&self, idx: usize) -> &str {
        self.nodes.get(idx).map_or("?", |n| n.path.as_str())
    }

    pub(crate) fn parent(&self, idx: usize) -> Option<usize> {
        self.nodes.get(idx).and_then(|n| n.parent)
    }

    pub(crate) fn by_phandle(&self, ph: u32) -> Option<usize> {
        self.phandles.get(&ph).copied()
    }

    pub(crate) fn phandle_of(&self, idx: usize) -> Option<u32> {
        self.phandles.iter().find(|&(_, &n)| n == idx).map(|(&ph, _)| ph)
    }

    pub(crate) fn prop(&self, idx: usize, name: &str) -> Option<&'a [u8]> {
        self.nodes.get(idx)?.props.iter().find(|p| p.name == name).map(|p| p.value)
    }

    pub(crate) fn has(&self, idx: usize, name: &str) -> bool {
        self.prop(idx, name).is_some()
    }

    /// Children of `idx` (empty for a bad index).
    pub(crate) fn children(&self, idx: usize) -> &[usize] {
        self.nodes.get(idx).map_or(&[], |n| n.children.as_slice())
    }

    /// Finds a node by full path. Like the DT spec allows, a component without a
    /// unit address matches a child whose name before '@' equals it (exact names win).
    pub(crate) fn find_path(&self, path: &str) -> Option<usize> {
        let rest = path.strip_prefix('/')?;
        let mut cur = 0usize;
        self.nodes.first()?;
        for comp in rest.split('/').filter(|c| !c.is_empty()) {
            let kids = self.children(cur);
            let exact = kids.iter().copied().find(|&k| self.nodes.get(k).is_some_and(|n| n.name == comp));
            cur = match exact {
                Some(k) => k,
                None if !comp.contains('@') => kids
                    .iter()
                    .copied()
                    .find(|&k| self.nodes.get(k).is_some_and(|n| n.name.split('@').next() == Some(comp)))?,
                None => return None,
            };
        }
        Some(cur)
    }

    /// Iterates node indices in tree (DFS, blob) order.
    pub(crate) fn indices(&self) -> core::ops::Range<usize> {
        0..self.nodes.len()
    }
}

fn parse_memreserve(blob: &[u8], off: usize) -> Result<Vec<(u64, u64)>, DtError> {
    let mut out = Vec::new();
    let mut pos = off;
    loop {
        let addr = be64(blob, pos).ok_or(DtError::BadBlock("memory reservation"))?;
        let size =
            be64(blob, pos.checked_add(8).ok_or(DtError::Truncated)?).ok_or(DtError::BadBlock("memory reservation"))?;
        if addr == 0 && size == 0 {
            return Ok(out);
        }
        out.push((addr, size));
        pos = pos.checked_add(16).ok_or(DtError::Truncated)?;
    }
}
