//! Boot arguments from `/chosen/bootargs`: `key=value` words as on Linux's command
//! line (`test=<filter>`, `iommu.passthrough=`, `iommu.strict=`, ...). Pure.

#[derive(Debug, Clone, Copy, Default)]
pub struct BootArgs<'a> {
    raw: &'a str,
}

impl<'a> BootArgs<'a> {
    pub fn new(raw: &'a str) -> Self {
        BootArgs { raw }
    }

    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The value of the last `key=value` word (later words override earlier ones,
    /// so a loader may append). A bare `key` gives `Some("")`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        let mut found = None;
        for w in self.raw.split_ascii_whitespace() {
            match w.split_once('=') {
                Some((k, v)) if k == key => found = Some(v),
                None if w == key => found = Some(""),
                _ => {}
            }
        }
        found
    }

    /// A boolean option: `1/0`, `y/n`, `on/off`, `true/false`; a bare key is true.
    /// `Err` carries the value that was not understood.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, &'a str> {
        match self.get(key) {
            None => Ok(None),
            Some("" | "1" | "y" | "Y" | "on" | "true" | "yes") => Ok(Some(true)),
            Some("0" | "n" | "N" | "off" | "false" | "no") => Ok(Some(false)),
            Some(v) => Err(v),
        }
    }

    /// A number in decimal or 0x-hex.
    pub fn number(&self, key: &str) -> Result<Option<u64>, &'a str> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_u64(v).map(Some).ok_or(v),
        }
    }
}

pub fn parse_u64(v: &str) -> Option<u64> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_overrides() {
        let a = BootArgs::new("console=ttyAMA0 test=smmu::* iommu.strict=0 quiet iommu.strict=1");
        assert_eq!(a.get("test"), Some("smmu::*"));
        assert_eq!(a.get("quiet"), Some(""));
        assert_eq!(a.get("missing"), None);
        assert_eq!(a.flag("iommu.strict"), Ok(Some(true)));
        assert_eq!(a.flag("quiet"), Ok(Some(true)));
        assert_eq!(a.flag("nothing"), Ok(None));
    }

    #[test]
    fn bad_values_are_reported() {
        let a = BootArgs::new("iommu.passthrough=maybe evtq.log2=0x4 n=12x");
        assert_eq!(a.flag("iommu.passthrough"), Err("maybe"));
        assert_eq!(a.number("evtq.log2"), Ok(Some(4)));
        assert_eq!(a.number("n"), Err("12x"));
    }

    #[test]
    fn key_prefix_does_not_match() {
        let a = BootArgs::new("iommu.strictly=1");
        assert_eq!(a.get("iommu.strict"), None);
    }
}
