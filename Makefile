# Phase Boot. New users need two commands: `make run` and `make test`.
# Both install what they need (apt packages, rust targets, Debian's kernel) idempotently.

SHELL := /bin/bash
OUT   := out
MUSL  := x86_64-unknown-linux-musl
PHASE := target/$(MUSL)/release/phase
IMAGE := target/release/phase-image
KDIR  := build/kernel
# Reproducible builds: every timestamp in our images is the last commit's time.
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: all setup kernel binaries build run test lint bench clean
all: build

setup:
	@scripts/setup.sh

kernel: setup
	@scripts/fetch-kernel.sh
	@mkdir -p $(OUT)
	@rel=$$(sed -n 's/^release=//p' $(KDIR)/VERSION); \
	  cp -f $(KDIR)/boot/vmlinuz-$$rel $(OUT)/vmlinuz; \
	  cp -f $(KDIR)/boot/config-$$rel $(OUT)/kernel.config; \
	  cp -f $(KDIR)/VERSION $(OUT)/kernel.version

binaries: setup
	cargo build --release --locked --target $(MUSL) -p phase
	cargo build --release --locked -p phase-image -p phase-qemu
	@mkdir -p $(OUT)
	@cp -f $(PHASE) $(OUT)/phase
	@cp -f $(IMAGE) $(OUT)/phase-image
	@file $(OUT)/phase | grep -q 'statically linked' || { echo "out/phase is not statically linked"; file $(OUT)/phase; exit 1; }
	@echo "out/phase: $$(stat -c %s $(OUT)/phase) bytes, $$(file -b $(OUT)/phase | cut -d, -f1-5)"

build: kernel binaries
	@rm -f $(OUT)/accel.probe
	@rel=$$(sed -n 's/^release=//p' $(KDIR)/VERSION); \
	  $(OUT)/phase-image initramfs --init $(OUT)/phase \
	    --modules-dir $(KDIR)/lib/modules/$$rel --modules-list initramfs/modules.txt \
	    --strict -o $(OUT)/initramfs.img

run: build
	target/release/phase-vm $(ARGS)

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Unit tests, then the QEMU boot tests against the artifacts just built.
test: build lint
	cargo test --workspace --locked

bench: build
	@scripts/bench.sh

clean:
	rm -rf $(OUT) target build
