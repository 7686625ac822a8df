//! One GICv3 ITS: device and collection tables (GITS_BASER), the command queue
//! (bounded waits, stall detection), an ITT per device, and DeviceID/EventID -> LPI maps.
//! Names after the GIC architecture spec (IHI 0069) and Linux irq-gic-v3-its.c.

use super::IrqError;
use super::its_cmd::{BaserType, ItsCommand, RdBase, baser_entry_size, baser_page_size, baser_value};
use super::regs::{
    FRAME_64K, GITS_CREADR, GITS_CTLR, GITS_TYPER, GitsRegs, ITS_RAWAWB, SH_INNER, SH_MASK, TRANSLATER_OFFSET,
};
use crate::arch::cache;
use crate::arch::timer::Deadline;
use crate::dt;
use crate::mm::frames;
use alloc::string::String;
use alloc::vec::Vec;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

const CMD_BYTES: usize = 32;
/// Command queue: 4 pages, 512 commands.
const CMDQ_PAGES: usize = 4;
const CMDQ_LEN: usize = CMDQ_PAGES * 4096;
/// Bound for a command batch to be consumed, and for quiescence.
const CMD_TIMEOUT_MS: u64 = 100;
/// Device table size cap: DeviceIDs 0..2^16 (QEMU has 16 Devbits).
const MAX_DEV_BITS: u32 = 16;
/// EventID bits per device ITT (two events: edu has one vector).
const EVENT_BITS: u8 = 1;

struct Table {
    pages: usize,
    page_size: usize,
}

struct ItsDevice {
    devid: u32,
    itt_pa: u64,
    /// EventID -> LPI.
    events: Vec<Option<u32>>,
}

pub struct Its {
    pub node: String,
    pub base: u64,
    pub phandle: u32,
    regs: &'static GitsRegs,
    cmdq_pa: u64,
    /// Byte offset of the next command slot (GITS_CWRITER).
    wr: usize,
    /// Command queue and tables are Inner Shareable (else the CPU cleans them).
    coherent: bool,
    pub dev_bits: u32,
    pub itt_entry_size: usize,
    target: RdBase,
    tables: Vec<Table>,
    devices: Vec<ItsDevice>,
    pub commands: u64,
}

// SAFETY: the ITS frame is owned by this driver; the GIC mutex serialises access.
unsafe impl Send for Its {}

impl Its {
    /// Tables, command queue, enable, and collection 0 mapped to this CPU's
    /// redistributor (`rd_base`, `processor_number`).
    ///
    /// # Safety
    /// `desc` must be an ITS of this machine mapped as device memory, used by nothing else.
    pub unsafe fn probe(desc: &dt::Its, rd_base: u64, processor_number: u16) -> Result<Its, IrqError> {
        let err = |why: &str| IrqError::Its { node: desc.node.clone(), why: why.into() };
        if desc.size < 2 * FRAME_64K {
            return Err(err("reg smaller than its two 64 KiB frames"));
        }
        // SAFETY: per the caller, the ITS control frame is at desc.base.
        let regs = unsafe { &*(desc.base as *const GitsRegs) };
        if regs.ctlr.is_set(GITS_CTLR::ENABLED) {
            regs.ctlr.modify(GITS_CTLR::ENABLED::CLEAR);
        }
        let d = Deadline::after_ms(CMD_TIMEOUT_MS);
        while !regs.ctlr.is_set(GITS_CTLR::QUIESCENT) {
            if d.expired() {
                return Err(err("GITS_CTLR.Quiescent never set"));
            }
        }
        let typer = regs.typer.extract();
        if !typer.is_set(GITS_TYPER::PHYSICAL) {
            return Err(err("no physical LPI support (GITS_TYPER.Physical = 0)"));
        }
        let dev_bits = typer.read(GITS_TYPER::DEV_BITS) as u32 + 1;
        let itt_entry_size = typer.read(GITS_TYPER::ITT_ENTRY_SIZE) as usize + 1;
        let target = if typer.is_set(GITS_TYPER::PTA) {
            RdBase::Address(rd_base)
        } else {
            RdBase::ProcessorNumber(processor_number)
        };
        let cmdq_pa = frames::alloc_zeroed(CMDQ_PAGES).ok_or(IrqError::NoMemory("ITS command queue"))?;
        let mut its = Its {
            node: desc.node.clone(),
            base: desc.base,
            phandle: desc.phandle,
            regs,
            cmdq_pa,
            wr: 0,
            coherent: true,
            dev_bits,
            itt_entry_size,
            target,
            tables: Vec::new(),
            devices: Vec::new(),
            commands: 0,
        };
        its.setup_tables(typer.read(GITS_TYPER::HCC) as u32)?;
        let cbaser = cmdq_pa | ITS_RAWAWB | SH_INNER | (CMDQ_PAGES as u64 - 1) | (1 << 63);
        regs.cbaser.set(cbaser);
        if regs.cbaser.get() & SH_MASK == 0 {
            its.coherent = false;
            regs.cbaser.set(cmdq_pa | (CMDQ_PAGES as u64 - 1) | (1 << 63));
        }
        cache::clean(cmdq_pa as usize, CMDQ_LEN);
        regs.cwriter.set(0);
        regs.ctlr.modify(GITS_CTLR::ENABLED::SET);
        its.run(&[ItsCommand::Mapc { icid: 0, rd: target, valid: true }])?;
        Ok(its)
    }

    /// Program the Device and Collection GITS_BASERs with flat tables, trying 64, 16
    /// and 4 KiB pages (Linux its_setup_baser does the same dance).
    fn setup_tables(&mut self, hcc: u32) -> Result<(), IrqError> {
        let mut have_devices = false;
        let mut have_collections = hcc > 0;
        for i in 0..8 {
            let cur = self.regs.baser[i].get();
            let ty = BaserType::of(cur);
            let entries: u64 = match ty {
                BaserType::Devices => 1 << self.dev_bits.min(MAX_DEV_BITS),
                // One collection per CPU is all we need; a page holds hundreds.
                BaserType::Collections => 1,
                _ => continue,
            };
            let esz = baser_entry_size(cur) as u64;
            let mut done = false;
            for psz in [0x1_0000usize, 0x4000, 0x1000] {
                let pages = (entries * esz).div_ceil(psz as u64).max(1) as usize;
                if pages > 256 {
                    continue;
                }
                let bytes = pages * psz;
                let pa = frames::alloc_zeroed(bytes.div_ceil(4096)).ok_or(IrqError::NoMemory("ITS table"))?;
                let Some(v) = baser_value(cur, pa, psz, pages, ITS_RAWAWB | SH_INNER) else {
                    frames::free(pa, bytes.div_ceil(4096));
                    continue;
                };
                self.regs.baser[i].set(v);
                let back = self.regs.baser[i].get();
                if baser_page_size(back) != psz {
                    frames::free(pa, bytes.div_ceil(4096));
                    continue;
                }
                if back & SH_MASK == 0 {
                    self.coherent = false;
                    self.regs.baser[i].set(v & !(SH_MASK | ITS_RAWAWB));
                }
                cache::clean(pa as usize, bytes);
                self.tables.push(Table { pages, page_size: psz });
                done = true;
                break;
            }
            if !done {
                return Err(IrqError::Its {
                    node: self.node.clone(),
                    why: alloc::format!("GITS_BASER{i} refuses every page size"),
                });
            }
            match ty {
                BaserType::Devices => have_devices = true,
                _ => have_collections = true,
            }
        }
        if !have_devices || !have_collections {
            return Err(IrqError::Its {
                node: self.node.clone(),
                why: "no Device or Collection table register".into(),
            });
        }
        Ok(())
    }

    /// GITS_TRANSLATER: where a device writes its EventID.
    pub fn doorbell(&self) -> u64 {
        self.base + FRAME_64K + TRANSLATER_OFFSET
    }

    fn creadr(&self) -> Result<usize, IrqError> {
        let r = self.regs.creadr.extract();
        if r.is_set(GITS_CREADR::STALLED) {
            return Err(IrqError::Its {
                node: self.node.clone(),
                why: "command queue stalled (GITS_CREADR.Stalled)".into(),
            });
        }
        Ok((r.read(GITS_CREADR::OFFSET) as usize) * CMD_BYTES)
    }

    /// Queue `cmds` and a SYNC to our redistributor, ring GITS_CWRITER once, and wait
    /// (bounded) until the ITS has consumed all of them.
    pub fn run(&mut self, cmds: &[ItsCommand]) -> Result<(), IrqError> {
        let sync = ItsCommand::Sync { rd: self.target };
        for c in cmds.iter().chain(core::iter::once(&sync)) {
            let next = (self.wr + CMD_BYTES) % CMDQ_LEN;
            let d = Deadline::after_ms(CMD_TIMEOUT_MS);
            while next == self.creadr()? {
                // Full: let the ITS catch up with what was written so far.
                self.regs.cwriter.set(self.wr as u64);
                if d.expired() {
                    return Err(IrqError::Timeout("ITS command queue space"));
                }
            }
            let slot = (self.cmdq_pa as usize + self.wr) as *mut u64;
            for (i, w) in c.encode().iter().enumerate() {
                // SAFETY: the slot lies inside our command queue and is not between
                // GITS_CREADR and GITS_CWRITER (the queue is not full).
                unsafe { core::ptr::write_volatile(slot.add(i), *w) };
            }
            if !self.coherent {
                cache::clean(slot as usize, CMD_BYTES);
            }
            self.wr = next;
            self.commands += 1;
        }
        cache::dsb_sy();
        self.regs.cwriter.set(self.wr as u64);
        let d = Deadline::after_ms(CMD_TIMEOUT_MS);
        while self.creadr()? != self.wr {
            if d.expired() {
                return Err(IrqError::Timeout("ITS command queue drain"));
            }
        }
        Ok(())
    }

    /// Map (DeviceID, a free EventID) to `intid`: MAPD for a new device (with its ITT),
    /// MAPTI, INV. Returns the EventID (the MSI data).
    pub fn map_event(&mut self, devid: u32, intid: u32) -> Result<u32, IrqError> {
        if devid >= 1 << self.dev_bits.min(MAX_DEV_BITS) {
            return Err(IrqError::Its {
                node: self.node.clone(),
                why: alloc::format!("DeviceID {devid:#x} beyond the device table"),
            });
        }
        let mut cmds = Vec::new();
        let i = match self.devices.iter().position(|d| d.devid == devid) {
            Some(i) => i,
            None => {
                let itt_bytes = (1usize << EVENT_BITS) * self.itt_entry_size;
                let itt_pa = frames::alloc_zeroed(itt_bytes.div_ceil(4096)).ok_or(IrqError::NoMemory("ITT"))?;
                cache::clean(itt_pa as usize, itt_bytes.max(256));
                cmds.push(ItsCommand::Mapd { devid, event_bits: EVENT_BITS, itt: itt_pa, valid: true });
                self.devices.push(ItsDevice { devid, itt_pa, events: alloc::vec![None; 1 << EVENT_BITS] });
                self.devices.len() - 1
            }
        };
        let dev = &mut self.devices[i];
        let eventid =
            dev.events.iter().position(Option::is_none).ok_or(IrqError::NoLpis("device's events all used"))?;
        dev.events[eventid] = Some(intid);
        let eventid = eventid as u32;
        cmds.push(ItsCommand::Mapti { devid, eventid, intid, icid: 0 });
        cmds.push(ItsCommand::Inv { devid, eventid });
        if let Err(e) = self.run(&cmds) {
            self.devices[i].events[eventid as usize] = None;
            return Err(e);
        }
        Ok(eventid)
    }

    /// Undo `map_event`: DISCARD (drops a pending LPI too); the device's last event
    /// also unmaps the device (MAPD V=0) and frees its ITT.
    pub fn unmap_event(&mut self, devid: u32, eventid: u32) -> Result<(), IrqError> {
        let i = self.devices.iter().position(|d| d.devid == devid).ok_or(IrqError::BadIntid(eventid))?;
        let slot = self.devices[i].events.get_mut(eventid as usize).ok_or(IrqError::BadIntid(eventid))?;
        *slot = None;
        let mut cmds = alloc::vec![ItsCommand::Discard { devid, eventid }];
        let last = self.devices[i].events.iter().all(Option::is_none);
        if last {
            cmds.push(ItsCommand::Mapd { devid, event_bits: EVENT_BITS, itt: 0, valid: false });
        }
        self.run(&cmds)?;
        if last {
            // The ITS no longer reads the ITT once MAPD V=0 has been consumed (SYNC).
            let d = self.devices.swap_remove(i);
            frames::free(d.itt_pa, ((1usize << EVENT_BITS) * self.itt_entry_size).div_ceil(4096));
        }
        Ok(())
    }

    /// Total bytes given to the ITS for its tables.
    pub fn table_bytes(&self) -> usize {
        self.tables.iter().map(|t| t.pages * t.page_size).sum()
    }
}
