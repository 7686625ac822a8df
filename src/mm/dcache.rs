//! Which data-cache lines an invalidation of a buffer may simply discard (pure, host-tested):
//! a line the buffer covers only in part also holds someone else's bytes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOp {
    /// `DC IVAC`: drop the line (the buffer owns all of it).
    Invalidate,
    /// `DC CIVAC`: write the line back first (it is shared with bytes outside the buffer,
    /// which may be dirty and must survive), as Linux's `dcache_inval_poc` does at the edges.
    CleanInvalidate,
}

/// The lines of `[start, start + len)` (line size `line`, a power of two) and what an
/// invalidation must do to each.
pub fn invalidate_lines(start: usize, len: usize, line: usize) -> impl Iterator<Item = (usize, LineOp)> {
    let end = start.saturating_add(len);
    let first = start & !(line - 1);
    let last_partial = end & (line - 1) != 0;
    let first_partial = start & (line - 1) != 0;
    let n = if len == 0 { 0 } else { (end - first).div_ceil(line) };
    (0..n).map(move |i| {
        let a = first + i * line;
        let partial = (i == 0 && first_partial) || (i == n - 1 && last_partial);
        (a, if partial { LineOp::CleanInvalidate } else { LineOp::Invalidate })
    })
}

#[cfg(test)]
mod tests {
    use super::LineOp::{CleanInvalidate as CI, Invalidate as I};
    use super::*;
    use alloc::vec::Vec;

    fn ops(start: usize, len: usize) -> Vec<(usize, LineOp)> {
        invalidate_lines(start, len, 64).collect()
    }

    #[test]
    fn whole_lines_are_dropped() {
        assert_eq!(ops(0x1000, 128), [(0x1000, I), (0x1040, I)]);
        assert_eq!(ops(0x1000, 0), []);
    }

    #[test]
    fn partial_edges_are_written_back() {
        // Starts mid-line, ends mid-line: both edge lines shared with neighbours.
        assert_eq!(ops(0x1010, 0x80), [(0x1000, CI), (0x1040, I), (0x1080, CI)]);
        // Aligned start, ragged end.
        assert_eq!(ops(0x1000, 0x41), [(0x1000, I), (0x1040, CI)]);
        // Ragged start, aligned end.
        assert_eq!(ops(0x1020, 0x20), [(0x1000, CI)]);
        // Inside one line.
        assert_eq!(ops(0x1004, 8), [(0x1000, CI)]);
    }

    #[test]
    fn every_byte_covered_once() {
        for start in 0x1000..0x1000 + 130 {
            for len in 1..200 {
                let v = ops(start, len);
                assert_eq!(v.first().map(|x| x.0), Some(start & !63));
                assert!(v.last().is_some_and(|x| x.0 + 64 >= start + len));
                assert!(v.windows(2).all(|w| w[1].0 == w[0].0 + 64));
                // Only lines holding bytes outside the buffer are written back.
                for &(a, op) in &v {
                    let whole = a >= start && a + 64 <= start + len;
                    assert_eq!(op == I, whole, "start {start:#x} len {len} line {a:#x}");
                }
            }
        }
    }
}
