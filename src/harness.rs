//! The in-kernel test harness: runs named tests, prints one line per test in the
//! form the runner parses, and a closing count line. Filtering is pure and tested.

use alloc::string::String;

/// Printed when the kernel dies outside the harness (exception, panic).
pub const ABORT_LINE: &str = "KERNEL ABORTED";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Does `suite::name` match `filter`? Comma-separated patterns; `*` matches any
/// run of characters; a pattern without `*` matches as a prefix; `!pat` excludes.
pub fn matches(filter: &str, full_name: &str) -> bool {
    let mut included = false;
    let mut any_positive = false;
    for pat in filter.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(neg) = pat.strip_prefix('!') {
            if glob(neg, full_name) {
                return false;
            }
        } else {
            any_positive = true;
            if glob(pat, full_name) {
                included = true;
            }
        }
    }
    included || !any_positive
}

fn glob(pat: &str, s: &str) -> bool {
    if !pat.contains('*') {
        return s.starts_with(pat);
    }
    let parts: alloc::vec::Vec<&str> = pat.split('*').collect();
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(k) => rest = &rest[k + p.len()..],
                None => return false,
            }
        }
    }
    true
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl Summary {
    pub fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail(_) => self.failed += 1,
            Outcome::Skip(_) => self.skipped += 1,
        }
    }
}

impl core::fmt::Display for Summary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// The line for one test result.
pub fn result_line(suite: &str, name: &str, o: &Outcome) -> String {
    match o {
        Outcome::Pass => alloc::format!("test {suite}::{name} ... ok"),
        Outcome::Fail(why) => alloc::format!("test {suite}::{name} ... FAILED ({why})"),
        Outcome::Skip(why) => alloc::format!("test {suite}::{name} ... skipped ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(matches("", "boot::el"));
        assert!(matches("boot", "boot::el"));
        assert!(!matches("smmu", "boot::el"));
        assert!(matches("*::el", "boot::el"));
        assert!(matches("boot::*,smmu::probe", "smmu::probe"));
        assert!(!matches("!boot::el", "boot::el"));
        assert!(matches("!boot::el", "boot::mmu"));
        assert!(!matches("boot::*,!boot::mmu*", "boot::mmu_on"));
        assert!(matches("b*t::m*", "boot::mmu_on"));
        assert!(!matches("b*t::x*", "boot::mmu_on"));
    }

    #[test]
    fn lines_and_summary() {
        let mut s = Summary::default();
        for o in [Outcome::Pass, Outcome::Fail("x".into()), Outcome::Skip("y".into()), Outcome::Pass] {
            s.add(&o);
        }
        assert_eq!(s.to_string(), "2 passed, 1 failed, 1 skipped");
        assert_eq!(result_line("a", "b", &Outcome::Fail("why".into())), "test a::b ... FAILED (why)");
        assert_eq!(result_line("a", "b", &Outcome::Skip("no smmu".into())), "test a::b ... skipped (no smmu)");
    }
}
