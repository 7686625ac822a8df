# smmuv3-kernel: `make run` boots it in QEMU, `make test` runs every test.
HOST      := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
TARGET    := aarch64-unknown-none
PROFILE   := release
ELF_OUT   := target/$(TARGET)/$(PROFILE)/smmuv3-kernel
BUILD     := build
BOARD     ?= qemu-virt
BOOTARGS  ?=
OBJCOPY   := $(shell rustc --print sysroot 2>/dev/null)/lib/rustlib/$(HOST)/bin/llvm-objcopy

.PHONY: all setup build run test image bench profile profile-qemu soak host-test dt-report clippy fmt clean

all: build

setup:
	@bash .ci/setup

build:
	@command -v rustup >/dev/null && (rustup target list --installed | grep -qx $(TARGET) || bash .ci/setup) || true
	cargo build --release --features kernel --bin smmuv3-kernel
	@mkdir -p $(BUILD)
	cp $(ELF_OUT) $(BUILD)/kernel.elf
	$(OBJCOPY) -O binary $(BUILD)/kernel.elf $(BUILD)/kernel.bin
	@echo "built $(BUILD)/kernel.bin ($$(stat -c %s $(BUILD)/kernel.bin) bytes)"

run: setup build
	@args=$$(grep -v '^#' boards/$(BOARD)/qemu.args | tr '\n' ' '); \
	bargs="$$(test -f boards/$(BOARD)/bootargs && grep -v '^#' boards/$(BOARD)/bootargs | tr '\n' ' ')$(BOOTARGS)"; \
	echo "$$args -kernel $(BUILD)/kernel.bin -append \"$$bargs\""; \
	$$args -kernel $(BUILD)/kernel.bin -append "$$bargs"

# The disk qemu.args gives the virtio-blk device (sector pattern: tests/run.py make_disk_image).
run: $(BUILD)/disk.img
$(BUILD)/disk.img:
	@mkdir -p $(BUILD)
	python3 -c 'import sys; sys.path.insert(0, "tests"); import run; run.make_disk_image("$@")'

test: setup build
	python3 tests/run.py

image: setup build
	@test -n "$(BOARD)" || { echo "usage: make image BOARD=<name> (see boards/)"; exit 2; }
	bash boards/image.sh $(BOARD)

bench: setup build
	python3 tests/bench.py

# Guest instructions of one DMA API map+unmap per function, lazy and bypass (needs cc and
# llvm-symbolizer; PROFILE_ARGS="--modes strict,lazy,bypass --fresh --lines" for more).
profile: setup build
	python3 tests/profile/profile.py $(PROFILE_ARGS)

profile-qemu: setup build
	python3 tests/profile/qemu_cost.py $(PROFILE_ARGS)

soak: setup build
	python3 tests/run.py --no-host --soak

host-test:
	cargo test --lib --target $(HOST)

# Host half of `make bench`: src/iommu/io_pgtable vs aarch64-paging (tests/bench_pgtable.rs);
# prints a table and one `BENCH {json}` line per metric. BENCH_RUNS=n changes the repeats (7).
.PHONY: bench-host
bench-host:
	cargo test --release --features std --target $(HOST) --test bench_pgtable

dt-report:
	@test -n "$(DTB)" || { echo "usage: make dt-report DTB=<file.dtb>"; exit 2; }
	@cargo run -q --features std --target $(HOST) --bin dt-report -- $(DTB)

clippy:
	cargo clippy --features kernel --bins --lib -- -D warnings
	cargo clippy --features std --target $(HOST) --lib --bins --tests -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps --features kernel --lib --bins
	RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps --features std --target $(HOST) --lib

fmt:
	cargo fmt --check

clean:
	cargo clean
	rm -rf $(BUILD)
