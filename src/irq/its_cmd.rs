//! GICv3 ITS commands (IHI 0069, "ITS commands") as 32-byte packets, and the
//! GITS_BASER/LPI property encodings. Pure: built and tested on the host.

/// Where a collection's interrupts go: a redistributor's processor number
/// (GITS_TYPER.PTA = 0) or its physical address (PTA = 1), as the RDbase field wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdBase {
    ProcessorNumber(u16),
    Address(u64),
}

impl RdBase {
    /// The RDbase field value (bits [50:16] of the third doubleword).
    fn field(self) -> u64 {
        match self {
            RdBase::ProcessorNumber(n) => u64::from(n),
            // 64 KiB-aligned address: bits [51:16] of the address.
            RdBase::Address(pa) => (pa >> 16) & ((1 << 35) - 1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItsCommand {
    /// Map DeviceID to an ITT of 2^`event_bits` entries at `itt` (256-byte aligned).
    Mapd { devid: u32, event_bits: u8, itt: u64, valid: bool },
    /// Map collection `icid` to a redistributor.
    Mapc { icid: u16, rd: RdBase, valid: bool },
    /// Map (DeviceID, EventID) to physical LPI `intid` in collection `icid`.
    Mapti { devid: u32, eventid: u32, intid: u32, icid: u16 },
    /// Reload the configuration of the LPI (DeviceID, EventID) maps to.
    Inv { devid: u32, eventid: u32 },
    /// Reload the configuration of every LPI of a collection.
    Invall { icid: u16 },
    /// Make the LPI (DeviceID, EventID) maps to pending, as if the device wrote it.
    Int { devid: u32, eventid: u32 },
    /// Remove the mapping of (DeviceID, EventID) (and clear its pending state).
    Discard { devid: u32, eventid: u32 },
    /// Wait until the effects of earlier commands are visible at the redistributor.
    Sync { rd: RdBase },
}

const OP_INT: u64 = 0x03;
const OP_SYNC: u64 = 0x05;
const OP_MAPD: u64 = 0x08;
const OP_MAPC: u64 = 0x09;
const OP_MAPTI: u64 = 0x0a;
const OP_INV: u64 = 0x0c;
const OP_INVALL: u64 = 0x0d;
const OP_DISCARD: u64 = 0x0f;

const VALID: u64 = 1 << 63;
/// ITT_addr occupies bits [51:8] of DW2.
const ITT_ADDR_MASK: u64 = 0x000f_ffff_ffff_ff00;

impl ItsCommand {
    /// The packet as four little-endian doublewords.
    pub fn encode(&self) -> [u64; 4] {
        let dev = |op: u64, devid: u32| op | (u64::from(devid) << 32);
        match *self {
            ItsCommand::Mapd { devid, event_bits, itt, valid } => [
                dev(OP_MAPD, devid),
                u64::from(event_bits.clamp(1, 32) - 1),
                (itt & ITT_ADDR_MASK) | if valid { VALID } else { 0 },
                0,
            ],
            ItsCommand::Mapc { icid, rd, valid } => {
                [OP_MAPC, 0, u64::from(icid) | (rd.field() << 16) | if valid { VALID } else { 0 }, 0]
            }
            ItsCommand::Mapti { devid, eventid, intid, icid } => {
                [dev(OP_MAPTI, devid), u64::from(eventid) | (u64::from(intid) << 32), u64::from(icid), 0]
            }
            ItsCommand::Inv { devid, eventid } => [dev(OP_INV, devid), u64::from(eventid), 0, 0],
            ItsCommand::Invall { icid } => [OP_INVALL, 0, u64::from(icid), 0],
            ItsCommand::Int { devid, eventid } => [dev(OP_INT, devid), u64::from(eventid), 0, 0],
            ItsCommand::Discard { devid, eventid } => [dev(OP_DISCARD, devid), u64::from(eventid), 0, 0],
            ItsCommand::Sync { rd } => [OP_SYNC, 0, rd.field() << 16, 0],
        }
    }
}

/// `GITS_BASER<n>.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaserType {
    None,
    Devices,
    Vpes,
    Collections,
    Other(u8),
}

impl BaserType {
    pub fn of(baser: u64) -> BaserType {
        match (baser >> 56) & 7 {
            0 => BaserType::None,
            1 => BaserType::Devices,
            2 => BaserType::Vpes,
            4 => BaserType::Collections,
            t => BaserType::Other(t as u8),
        }
    }
}

/// Bytes per table entry (`GITS_BASER<n>.Entry_Size` + 1).
pub fn baser_entry_size(baser: u64) -> usize {
    (((baser >> 48) & 0x1f) + 1) as usize
}

/// Page size of a GITS_BASER value: 4, 16 or 64 KiB.
pub fn baser_page_size(baser: u64) -> usize {
    match (baser >> 8) & 3 {
        0 => 0x1000,
        1 => 0x4000,
        _ => 0x1_0000,
    }
}

/// A flat (non-indirect) GITS_BASER value: `pages` pages of `page_size` at `pa`, valid,
/// with the RO fields (Type, Entry_Size) taken from `current` and `attrs` (cacheability,
/// shareability) or-ed in. `None` if the page size or count cannot be encoded.
pub fn baser_value(current: u64, pa: u64, page_size: usize, pages: usize, attrs: u64) -> Option<u64> {
    let psz = match page_size {
        0x1000 => 0u64,
        0x4000 => 1,
        0x1_0000 => 2,
        _ => return None,
    };
    if pages == 0 || pages > 256 || !pa.is_multiple_of(page_size as u64) {
        return None;
    }
    let ro = current & ((7 << 56) | (0x1f << 48));
    let addr = if page_size == 0x1_0000 {
        // 64 KiB pages: PA[47:16] in place, PA[51:48] in bits [15:12].
        (pa & 0x0000_ffff_ffff_0000) | (((pa >> 48) & 0xf) << 12)
    } else {
        pa & 0x0000_ffff_ffff_f000
    };
    Some(VALID | ro | attrs | addr | (psz << 8) | (pages as u64 - 1))
}

/// One byte of the LPI configuration table: priority (upper six bits), Group 1 (bit 1,
/// RES1 in GICv3), enable (bit 0).
pub fn lpi_property(priority: u8, enabled: bool) -> u8 {
    (priority & 0xfc) | 0b10 | u8::from(enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_match_the_spec_layout() {
        let mapd = ItsCommand::Mapd { devid: 0x18, event_bits: 1, itt: 0x4123_4500, valid: true }.encode();
        assert_eq!(mapd, [0x0000_0018_0000_0008, 0, 0x8000_0000_4123_4500, 0]);
        // Size is "bits - 1"; the ITT address keeps bits [51:8] only.
        let mapd = ItsCommand::Mapd { devid: 1, event_bits: 5, itt: 0x4000_00ff, valid: false }.encode();
        assert_eq!(mapd[1], 4);
        assert_eq!(mapd[2], 0x4000_0000);
        let mapc = ItsCommand::Mapc { icid: 3, rd: RdBase::ProcessorNumber(2), valid: true }.encode();
        assert_eq!(mapc, [0x09, 0, 0x8000_0000_0002_0003, 0]);
        let mapc = ItsCommand::Mapc { icid: 0, rd: RdBase::Address(0x080a_0000), valid: true }.encode();
        assert_eq!(mapc[2], VALID | (0x080a << 16));
        let mapti = ItsCommand::Mapti { devid: 0x10, eventid: 1, intid: 8193, icid: 0 }.encode();
        assert_eq!(mapti, [0x0000_0010_0000_000a, (8193u64 << 32) | 1, 0, 0]);
        assert_eq!(ItsCommand::Inv { devid: 7, eventid: 2 }.encode(), [0x0000_0007_0000_000c, 2, 0, 0]);
        assert_eq!(ItsCommand::Int { devid: 7, eventid: 2 }.encode()[0] & 0xff, 0x03);
        assert_eq!(ItsCommand::Discard { devid: 7, eventid: 2 }.encode()[0] & 0xff, 0x0f);
        assert_eq!(ItsCommand::Invall { icid: 9 }.encode(), [0x0d, 0, 9, 0]);
        assert_eq!(ItsCommand::Sync { rd: RdBase::ProcessorNumber(1) }.encode(), [0x05, 0, 1 << 16, 0]);
    }

    #[test]
    fn baser_fields() {
        // What QEMU's ITS resets GITS_BASER0 to: Devices, 8-byte entries, 64 KiB pages.
        let dev = (1u64 << 56) | (7 << 48) | (2 << 8);
        assert_eq!(BaserType::of(dev), BaserType::Devices);
        assert_eq!(BaserType::of(4 << 56), BaserType::Collections);
        assert_eq!(BaserType::of(0), BaserType::None);
        assert_eq!(baser_entry_size(dev), 8);
        assert_eq!(baser_page_size(dev), 0x1_0000);
        let v = baser_value(dev, 0x4100_0000, 0x1_0000, 8, 1 << 10).unwrap_or(0);
        assert_eq!(v, VALID | (1 << 56) | (7 << 48) | 0x4100_0000 | (1 << 10) | (2 << 8) | 7);
        // 64 KiB pages move PA[51:48] to bits [15:12].
        let hi = baser_value(dev, 0x000f_0000_0001_0000, 0x1_0000, 1, 0).unwrap_or(0);
        assert_eq!(hi & 0xffff_ffff_f000, 0x0001_0000 | (0xf << 12));
        assert_eq!(baser_value(dev, 0x4000_1000, 0x1000, 1, 0).map(|v| v & 0xff), Some(0));
        assert_eq!(baser_value(dev, 0x4000_1000, 0x1_0000, 1, 0), None, "misaligned");
        assert_eq!(baser_value(dev, 0x4000_0000, 0x1000, 257, 0), None, "too many pages");
        assert_eq!(baser_value(dev, 0x4000_0000, 0x2000, 1, 0), None, "no such page size");
    }

    #[test]
    fn lpi_property_byte() {
        assert_eq!(lpi_property(0xa0, true), 0xa3);
        assert_eq!(lpi_property(0xa3, false), 0xa2);
    }
}
