//! Carve usable RAM out of the memory nodes: minus the image, the DTB, and every
//! reserved region. Pure, host-tested.

use alloc::vec::Vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64, // exclusive
}

impl Span {
    pub fn new(base: u64, size: u64) -> Self {
        Span { start: base, end: base.saturating_add(size) }
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// `ram` minus every span in `holes`, aligned inward to `align` (a power of two),
/// sorted, with empty pieces dropped.
pub fn usable(ram: &[Span], holes: &[Span], align: u64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for r in ram {
        let mut pieces = alloc::vec![*r];
        for h in holes {
            let mut next = Vec::new();
            for p in pieces {
                if h.end <= p.start || h.start >= p.end {
                    next.push(p);
                    continue;
                }
                if h.start > p.start {
                    next.push(Span { start: p.start, end: h.start });
                }
                if h.end < p.end {
                    next.push(Span { start: h.end, end: p.end });
                }
            }
            pieces = next;
        }
        for p in pieces {
            let s = p.start.checked_add(align - 1).map(|v| v & !(align - 1));
            let e = p.end & !(align - 1);
            if let Some(s) = s
                && s < e
            {
                out.push(Span { start: s, end: e });
            }
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_cut_and_edges_aligned() {
        let ram = [Span::new(0x4000_0000, 0x4000_0000)];
        let holes = [
            Span::new(0x4000_0000, 0x10_0000),   // DTB at the start
            Span::new(0x4020_0000, 0x12_3456),   // image
            Span::new(0x7000_0000, 0x1000_0000), // reserved at the end
            Span::new(0x9000_0000, 0x1000),      // outside RAM: ignored
        ];
        let u = usable(&ram, &holes, 4096);
        assert_eq!(
            u,
            vec![Span { start: 0x4010_0000, end: 0x4020_0000 }, Span { start: 0x4032_4000, end: 0x7000_0000 },]
        );
    }

    #[test]
    fn hole_covering_everything_leaves_nothing() {
        let u = usable(&[Span::new(0x1000, 0x1000)], &[Span::new(0, 0x10000)], 4096);
        assert!(u.is_empty());
    }

    #[test]
    fn several_banks_sorted() {
        let u = usable(&[Span::new(0x8_8000_0000, 0x1000_0000), Span::new(0x4000_0000, 0x1000)], &[], 4096);
        assert_eq!(u[0].start, 0x4000_0000);
        assert_eq!(u[1].start, 0x8_8000_0000);
    }
}
