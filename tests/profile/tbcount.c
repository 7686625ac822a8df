/*
 * TCG plugin for `make profile`: counts how often each translated block runs and writes
 * one line per block that ran: "<guest vaddr hex> <instructions> <loads+stores> <runs>".
 * Usage: -plugin build/tbcount.so,out=FILE
 *
 * QEMU ships no header for plugins in Debian's packages, so the handful of entry points
 * used here are declared below from the documented plugin API (docs/devel/tcg-plugins;
 * API version 4 is what QEMU 9.2 to 10.0 accept, newer ones still take it). Counting is
 * exact: every execution of a block calls `ran`, and a block's instructions and memory
 * instructions are counted once when it is translated.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t plugin_id;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct {
    const char *target_name;
    struct {
        int min, cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus, max_vcpus;
        } system;
    };
} qemu_info_t;

void qemu_plugin_register_vcpu_tb_trans_cb(plugin_id, void (*)(plugin_id, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, void (*)(unsigned, void *), int flags, void *);
void qemu_plugin_register_atexit_cb(plugin_id, void (*)(plugin_id, void *), void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
size_t qemu_plugin_insn_data(const struct qemu_plugin_insn *, void *dest, size_t len);

__attribute__((visibility("default"))) int qemu_plugin_version = 4;

struct block {
    uint64_t vaddr;
    uint32_t insns, mem;
    uint64_t runs;
    struct block *next;
};
static struct block *blocks;
static const char *out_path = "tbcount.txt";

/* A64 loads and stores: op0 (bits 28:25) = x1x0. */
static int is_load_store(uint32_t insn) { return ((insn >> 25) & 5) == 4; }

/* The vCPUs run one at a time under -icount (which `make profile` uses), so a plain
 * increment does not race. */
static void ran(unsigned vcpu, void *b) {
    (void)vcpu;
    ((struct block *)b)->runs++;
}

static void translated(plugin_id id, struct qemu_plugin_tb *tb) {
    (void)id;
    struct block *b = calloc(1, sizeof *b);
    if (!b)
        return;
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->insns = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < b->insns; i++) {
        uint32_t w = 0;
        qemu_plugin_insn_data(qemu_plugin_tb_get_insn(tb, i), &w, sizeof w);
        b->mem += is_load_store(w);
    }
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, ran, 0 /* no register access */, b);
}

static void finished(plugin_id id, void *p) {
    (void)id, (void)p;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        perror(out_path);
        return;
    }
    for (struct block *b = blocks; b; b = b->next)
        if (b->runs)
            fprintf(f, "%llx %u %u %llu\n", (unsigned long long)b->vaddr, b->insns, b->mem,
                    (unsigned long long)b->runs);
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(plugin_id id, const qemu_info_t *info, int argc,
                                                               char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "out=", 4))
            out_path = argv[i] + 4;
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
