//! JSON summary of the SMMU-relevant part of a [`Platform`], for the `dt-report` host tool.
//! Hand-written (no serde in a `no_std` kernel crate); numbers are "0x.." strings.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use super::Platform;

/// A minimal JSON value: just what the report needs.
enum Json {
    Null,
    Bool(bool),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

fn hex(v: impl Into<u64>) -> Json {
    Json::Str(format!("{:#x}", v.into()))
}

fn s(v: &str) -> Json {
    Json::Str(String::from(v))
}

fn obj(fields: Vec<(&str, Json)>) -> Json {
    Json::Obj(fields.into_iter().map(|(k, v)| (String::from(k), v)).collect())
}

fn opt_path(p: Option<&str>) -> Json {
    p.map_or(Json::Null, s)
}

/// Appends `v` as a JSON string literal (RFC 8259 escaping).
fn escape(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// Pretty-prints with two-space indentation, one member per line, empty
/// containers as `[]` / `{}` (the layout of Python's `json.dumps(indent=2)`).
fn write(out: &mut String, v: &Json, level: usize) {
    let inner = level.saturating_add(1);
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Str(x) => escape(out, x),
        Json::Arr(items) if items.is_empty() => out.push_str("[]"),
        Json::Obj(items) if items.is_empty() => out.push_str("{}"),
        Json::Arr(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(out, inner);
                write(out, item, inner);
            }
            out.push('\n');
            indent(out, level);
            out.push(']');
        }
        Json::Obj(items) => {
            out.push_str("{\n");
            for (i, (k, item)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(out, inner);
                escape(out, k);
                out.push_str(": ");
                write(out, item, inner);
            }
            out.push('\n');
            indent(out, level);
            out.push('}');
        }
    }
}

/// Path of the node carrying phandle `ph`, as far as the platform knows it (SMMUs,
/// GIC ITSes); `null` otherwise.
fn phandle_path(p: &Platform, ph: Option<u32>) -> Json {
    let Some(ph) = ph else { return Json::Null };
    if let Some(smmu) = p.smmu_by_phandle(ph) {
        return s(&smmu.node);
    }
    let its = p.gic.as_ref().and_then(|g| g.its.iter().find(|i| i.phandle == ph && ph != 0));
    its.map_or(Json::Null, |i| s(&i.node))
}

/// The report: SMMUs, masters, PCI hosts with their iommu-map, direct maps, errors.
pub fn report_json(p: &Platform) -> String {
    let smmus = p
        .smmus
        .iter()
        .map(|m| {
            let irqs = m
                .irqs
                .iter()
                .map(|(name, cells)| (name.clone(), Json::Arr(cells.iter().map(|&c| hex(c)).collect())))
                .collect();
            obj(vec![
                ("node", s(&m.node)),
                ("base", hex(m.base)),
                ("size", hex(m.size)),
                ("enabled", Json::Bool(m.enabled)),
                ("coherent", Json::Bool(m.coherent)),
                ("irqs", Json::Obj(irqs)),
                ("msi_parent", phandle_path(p, m.msi_parent)),
                ("quirks", Json::Arr(m.quirks.iter().map(|q| s(q)).collect())),
            ])
        })
        .collect();
    let masters = p
        .masters
        .iter()
        .map(|m| {
            obj(vec![
                ("node", s(&m.node)),
                ("smmu", s(&m.smmu)),
                ("stream_ids", Json::Arr(m.stream_ids.iter().map(|&x| hex(x)).collect())),
            ])
        })
        .collect();
    let pci_hosts = p
        .pci_hosts
        .iter()
        .map(|h| {
            let map = h
                .iommu_map
                .iter()
                .map(|e| {
                    obj(vec![
                        ("rid_base", hex(e.rid_base)),
                        ("smmu", opt_path(e.smmu.as_deref())),
                        ("sid_base", hex(e.sid_base)),
                        ("length", hex(e.length)),
                    ])
                })
                .collect();
            obj(vec![
                ("node", s(&h.node)),
                ("ecam_base", hex(h.ecam_base)),
                ("ecam_size", hex(h.ecam_size)),
                ("bus_range", Json::Arr(vec![hex(h.bus_range.0), hex(h.bus_range.1)])),
                ("iommu_map", Json::Arr(map)),
            ])
        })
        .collect();
    let direct_maps = p
        .direct_maps
        .iter()
        .map(|d| {
            obj(vec![("node", s(&d.node)), ("master", s(&d.master)), ("iova", hex(d.iova)), ("size", hex(d.size))])
        })
        .collect();
    let errors = p.errors.iter().map(|e| obj(vec![("node", s(&e.node)), ("msg", s(&e.msg))])).collect();
    let root = obj(vec![
        ("smmus", Json::Arr(smmus)),
        ("masters", Json::Arr(masters)),
        ("pci_hosts", Json::Arr(pci_hosts)),
        ("direct_maps", Json::Arr(direct_maps)),
        ("errors", Json::Arr(errors)),
    ]);
    let mut out = String::new();
    write(&mut out, &root, 0);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_quote_characters() {
        let mut out = String::new();
        escape(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn empty_platform_has_empty_containers() {
        let json = report_json(&Platform::default());
        assert_eq!(
            json,
            "{\n  \"smmus\": [],\n  \"masters\": [],\n  \"pci_hosts\": [],\n  \"direct_maps\": [],\n  \"errors\": []\n}\n"
        );
    }
}
