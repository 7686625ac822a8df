// Entry: arm64 Linux Image header, EL2 -> EL1, stack, BSS, self-relocation.
// Everything here is PC-relative: the image runs wherever the loader put it.

.macro DROP_TO_EL1 target
    mov     x0, #(1 << 31)          // HCR_EL2.RW: EL1 is AArch64; no other traps
    msr     hcr_el2, x0
    mov     x0, #3                  // CNTHCTL_EL2: EL1 may use the physical counter/timer
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    mov     x0, #0x33ff             // CPTR_EL2: RES1 bits, no FP/SIMD traps
    msr     cptr_el2, x0
    msr     hstr_el2, xzr
    mrs     x0, midr_el1
    msr     vpidr_el2, x0
    mrs     x0, mpidr_el1
    msr     vmpidr_el2, x0
    // GICv3 system registers usable from EL1, if the CPU has them.
    mrs     x0, id_aa64pfr0_el1
    ubfx    x0, x0, #24, #4
    cbz     x0, 9f
    mrs     x0, s3_4_c12_c9_5       // ICC_SRE_EL2
    mov     x1, #0x9                // SRE | Enable (EL1 access)
    orr     x0, x0, x1
    msr     s3_4_c12_c9_5, x0
    isb
9:
    ldr     x0, =0x30d00800         // SCTLR_EL1: RES1 bits, MMU and caches off
    msr     sctlr_el1, x0
    mov     x0, #0x3c5              // SPSR: EL1h, DAIF masked
    msr     spsr_el2, x0
    adr     x0, \target
    msr     elr_el2, x0
    isb
    eret

.endm

.section .text.head, "ax"
.global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size: file + BSS + stack
    .quad   0xa                     // flags: little-endian, 4K pages, anywhere in RAM
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5 (no PE header)

primary_entry:
    mov     x19, x0                 // DTB physical address
    adr     x20, _start             // where we were loaded
    mrs     x21, CurrentEL
    ubfx    x21, x21, #2, #2        // entry exception level
    cmp     x21, #2
    b.eq    from_el2
    cmp     x21, #1
    b.eq    at_el1
    // EL3 entry is not supported: there is no console yet, so report through
    // semihosting (QEMU) and stop in a low-power loop.
    b       park

from_el2:
    DROP_TO_EL1 at_el1

at_el1:
    mov     x0, #(3 << 20)          // CPACR_EL1.FPEN: Rust code uses FP/SIMD registers
    msr     cpacr_el1, x0
    isb

    adrp    x0, __stack_top
    add     x0, x0, :lo12:__stack_top
    mov     sp, x0

    // Zero the BSS.
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
2:  cmp     x0, x1
    b.hs    3f
    stp     xzr, xzr, [x0], #16
    b       2b
3:
    // Apply R_AARCH64_RELATIVE relocations: *(base + off) = base + addend.
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
    mov     x22, #0                 // relocations of another type (reported later)
4:  cmp     x1, x2
    b.hs    6f
    ldp     x3, x4, [x1], #16       // r_offset, r_info
    ldr     x5, [x1], #8            // r_addend
    cmp     x4, #1027               // R_AARCH64_RELATIVE
    b.ne    5f
    add     x5, x5, x20
    str     x5, [x3, x20]
    b       4b
5:  add     x22, x22, #1
    b       4b
6:
    adrp    x0, exception_vectors
    add     x0, x0, :lo12:exception_vectors
    msr     vbar_el1, x0
    isb

    mov     x0, x19                 // dtb
    mov     x1, x20                 // load address
    mov     x2, x21                 // entry EL
    mov     x3, x22                 // unsupported relocations
    bl      kernel_entry
park:
    wfe
    b       park

// Secondary CPUs (PSCI CPU_ON): x0 = CPU index. The primary left each one a stack
// and the MMU registers in `smp_boot_args`, cleaned to the point of coherency.
.section .text, "ax"
.global secondary_entry
secondary_entry:
    mov     x19, x0
    mrs     x21, CurrentEL
    ubfx    x21, x21, #2, #2
    cmp     x21, #2
    b.ne    secondary_el1
    DROP_TO_EL1 secondary_el1
secondary_el1:
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    adrp    x0, exception_vectors
    add     x0, x0, :lo12:exception_vectors
    msr     vbar_el1, x0
    adrp    x1, smp_boot_args       // [mair, tcr, ttbr0, sctlr_set, stacks[0..]]
    add     x1, x1, :lo12:smp_boot_args
    add     x2, x1, #32
    ldr     x3, [x2, x19, lsl #3]   // this CPU's stack top
    mov     sp, x3
    ldp     x4, x5, [x1]
    ldp     x6, x7, [x1, #16]
    msr     mair_el1, x4
    msr     tcr_el1, x5
    msr     ttbr0_el1, x6
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    mrs     x8, sctlr_el1
    orr     x8, x8, x7
    msr     sctlr_el1, x8
    isb
    mov     x0, x19
    bl      secondary_main
1:  wfe
    b       1b
