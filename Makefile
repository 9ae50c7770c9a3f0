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
# The release `make build` signs, and the floor the initramfs accepts.
RELEASE_VERSION ?= 1
RELEASE_CMDLINE ?= console=ttyS0 quiet
# Release N+1 (out/release-next, upgrade tests): the same phase binary and keys, another
# Debian kernel ABI, pinned here as scripts/fetch-kernel.sh pins the first (docs/kexec.md).
NEXT_VERSION    := $(shell echo $$(($(RELEASE_VERSION) + 1)))
NEXT_KERNEL_PKG ?= linux-image-6.1.0-54-amd64
NKDIR := build/kernel-next
NEXT  := $(OUT)/next
# TEST keys (keys/test, committed, public): never use them outside tests; see docs/keys.md.
TESTKEYS := keys/test
# The TEST root and release expire a century after the commit, so `make test` on any commit
# keeps passing for as long as anyone runs it (no time bomb). Expiry itself is tested with
# explicit clocks (release/src/verify/tests.rs). A real build passes its own, short expiry.
TEST_EXPIRES_DAYS := 36500

.PHONY: all setup kernel binaries jobs build release-next run test test-future lint fuzz bench clean
all: build

setup:
	@scripts/setup.sh

kernel: setup
	@scripts/fetch-kernel.sh
	@mkdir -p $(OUT)
	@rel=$$(sed -n 's/^release=//p' $(KDIR)/VERSION); \
	  cp -f $(KDIR)/boot/vmlinuz-$$rel $(OUT)/vmlinuz; \
	  cp -f $(KDIR)/boot/config-$$rel $(OUT)/kernel.config; \
	  cp -f $(KDIR)/VERSION $(OUT)/kernel.version; \
	  sha256sum $(OUT)/vmlinuz | cut -d' ' -f1 > $(OUT)/kernel.sha256

# Two builds of the init: out/phase-node (default features: the WASM job executor) is the
# rootfs's /usr/lib/phase/phase and the host CLI for jobs; out/phase (--no-default-features)
# goes into the initramfs, which must stay within 4 MiB compressed (docs/jobs.md).
binaries: setup
	cargo build --release --locked --target $(MUSL) -p phase
	@mkdir -p $(OUT)
	@cp -f $(PHASE) $(OUT)/phase-node
	cargo build --release --locked --target $(MUSL) -p phase --no-default-features
	cargo build --release --locked -p phase-image -p phase-qemu
	@cp -f $(PHASE) $(OUT)/phase
	@cp -f $(IMAGE) $(OUT)/phase-image
	@cp -f target/release/phase-fwd $(OUT)/phase-fwd
	@for b in phase phase-node; do \
	  file $(OUT)/$$b | grep -q 'statically linked' || { echo "out/$$b is not statically linked"; file $(OUT)/$$b; exit 1; }; \
	  echo "out/$$b: $$(stat -c %s $(OUT)/$$b) bytes, $$(file -b $(OUT)/$$b | cut -d, -f1-5)"; \
	done

# The example WASM jobs (jobs/, its own workspace) for wasm32-wasip1, into out/jobs/.
JOBS := hello sieve spin membomb flood trap escape probe noop
jobs: setup
	cargo build --release --locked --manifest-path jobs/Cargo.toml --target wasm32-wasip1 --target-dir target/jobs
	@mkdir -p $(OUT)/jobs
	@for j in $(JOBS); do cp -f target/jobs/wasm32-wasip1/release/$$j.wasm $(OUT)/jobs/; done

build: kernel binaries jobs
	@rm -f $(OUT)/accel.probe
	$(OUT)/phase-image root --root-key $(TESTKEYS)/TEST-root-1.pub --root-threshold 1 \
	  --release-key $(TESTKEYS)/TEST-release-1.pub --release-key $(TESTKEYS)/TEST-release-2.pub \
	  --release-threshold 2 --sign $(TESTKEYS)/TEST-root-1.key --expires-in-days $(TEST_EXPIRES_DAYS) \
	  -o $(OUT)/trusted-root.json
	@# The DHT bootstrap list baked into the initramfs: for this TEST build, the node the
	@# discovery tests run at 10.216.0.1:4001 on their own test LAN (docs/discovery.md).
	@printf '# TEST bootstrap list written by make build: the DHT node of the test LAN\n# (keys/test/TEST-dht-bootstrap.key). A real build passes its own list.\n/ip4/10.216.0.1/tcp/4001/p2p/%s\n' \
	  "$$($(OUT)/phase dht peer-id --key $(TESTKEYS)/TEST-dht-bootstrap.key)" > $(OUT)/bootstrap-peers
	@rel=$$(sed -n 's/^release=//p' $(KDIR)/VERSION); \
	  $(OUT)/phase-image initramfs --init $(OUT)/phase \
	    --modules-dir $(KDIR)/lib/modules/$$rel --modules-list initramfs/modules.txt \
	    --file etc/phase/trusted-root.json=$(OUT)/trusted-root.json \
	    --file etc/phase/kernel.sha256=$(OUT)/kernel.sha256 \
	    --file etc/phase/bootstrap-peers=$(OUT)/bootstrap-peers \
	    --release-floor $(RELEASE_VERSION) --strict -o $(OUT)/initramfs.img
	@# The initramfs's budget: 4 MiB as the bootloader loads it (docs/bench.md).
	@s=$$(stat -c %s $(OUT)/initramfs.img); [ $$s -le 4194304 ] || \
	  { echo "out/initramfs.img is $$s bytes, over its 4 MiB budget (4194304 bytes)"; exit 1; }
	@rel=$$(sed -n 's/^release=//p' $(KDIR)/VERSION); \
	  $(OUT)/phase-image rootfs --init $(OUT)/phase-node --modules-dir $(KDIR)/lib/modules/$$rel \
	    --initramfs-modules initramfs/modules.txt --tree rootfs --version $(RELEASE_VERSION) \
	    -o $(OUT)/rootfs.squashfs
	@rm -rf $(OUT)/release
	$(OUT)/phase-image release --root $(OUT)/trusted-root.json --version $(RELEASE_VERSION) \
	  --cmdline "$(RELEASE_CMDLINE)" --expires-in-days $(TEST_EXPIRES_DAYS) --kernel $(OUT)/vmlinuz --initramfs $(OUT)/initramfs.img \
	  --rootfs $(OUT)/rootfs.squashfs --rootfs-verity $(OUT)/rootfs.verity.json \
	  --sign $(TESTKEYS)/TEST-release-1.key --out-dir $(OUT)/release
	$(OUT)/phase-image sign --key $(TESTKEYS)/TEST-release-2.key $(OUT)/release/release.json
	$(OUT)/phase-image verify --root $(OUT)/trusted-root.json $(OUT)/release
	# The disk embeds release.json: build it only after the threshold of signatures is met.
	$(OUT)/phase-image disk --release-dir $(OUT)/release --rootfs $(OUT)/rootfs.squashfs \
	  --verity $(OUT)/rootfs.verity --state-size-mib 64 -o $(OUT)/rootfs-disk.img
	# The same release as one hybrid image that boots by itself (BIOS, UEFI x64, UEFI IA32).
	$(OUT)/phase-image disk --bootable --trusted-root $(OUT)/trusted-root.json \
	  --release-dir $(OUT)/release --rootfs $(OUT)/rootfs.squashfs \
	  --verity $(OUT)/rootfs.verity --state-size-mib 64 -o $(OUT)/phase-x86_64.img
	@# The netboot TFTP root serves the release's own kernel and initramfs (docs/netboot.md).
	$(OUT)/phase-image netboot --kernel $(OUT)/release/vmlinuz --initramfs $(OUT)/release/initramfs.img \
	  -o $(OUT)/netboot
	$(OUT)/phase-image qcow2 $(OUT)/phase-x86_64.img -o $(OUT)/phase-x86_64.qcow2
	@$(MAKE) --no-print-directory release-next

# Release N+1 with its own kernel, modules, initramfs and rootfs; signed like release N.
release-next:
	@KERNEL_PKG=$(NEXT_KERNEL_PKG) KERNEL_DIR=$(NKDIR) scripts/fetch-kernel.sh
	@mkdir -p $(NEXT)
	@rel=$$(sed -n 's/^release=//p' $(NKDIR)/VERSION); \
	  cp -f $(NKDIR)/boot/vmlinuz-$$rel $(NEXT)/vmlinuz; \
	  cp -f $(NKDIR)/VERSION $(NEXT)/kernel.version; \
	  sha256sum $(NEXT)/vmlinuz | cut -d' ' -f1 > $(NEXT)/kernel.sha256; \
	  $(OUT)/phase-image initramfs --init $(OUT)/phase \
	    --modules-dir $(NKDIR)/lib/modules/$$rel --modules-list initramfs/modules.txt \
	    --file etc/phase/trusted-root.json=$(OUT)/trusted-root.json \
	    --file etc/phase/kernel.sha256=$(NEXT)/kernel.sha256 \
	    --file etc/phase/bootstrap-peers=$(OUT)/bootstrap-peers \
	    --release-floor $(RELEASE_VERSION) --strict -o $(NEXT)/initramfs.img && \
	  $(OUT)/phase-image rootfs --init $(OUT)/phase-node --modules-dir $(NKDIR)/lib/modules/$$rel \
	    --initramfs-modules initramfs/modules.txt --tree rootfs --version $(NEXT_VERSION) \
	    --progress-every 100000 -o $(NEXT)/rootfs.squashfs
	@rm -rf $(OUT)/release-next
	$(OUT)/phase-image release --root $(OUT)/trusted-root.json --version $(NEXT_VERSION) \
	  --cmdline "$(RELEASE_CMDLINE)" --expires-in-days $(TEST_EXPIRES_DAYS) --kernel $(NEXT)/vmlinuz --initramfs $(NEXT)/initramfs.img \
	  --rootfs $(NEXT)/rootfs.squashfs --rootfs-verity $(NEXT)/rootfs.verity.json \
	  --sign $(TESTKEYS)/TEST-release-1.key --out-dir $(OUT)/release-next
	$(OUT)/phase-image sign --key $(TESTKEYS)/TEST-release-2.key $(OUT)/release-next/release.json
	$(OUT)/phase-image verify --root $(OUT)/trusted-root.json $(OUT)/release-next

# The whole story on this terminal (qemu/src/story.rs): the image boots release N under UEFI,
# a provider of out/release-next is forwarded in, the guest kexecs into N+1 and powers off.
# ARGS: more kernel words; KEEP=1: the guest keeps running, its console here (Ctrl-A X quits).
run: build
	target/release/phase-run $(if $(KEEP),--keep) $(ARGS)

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Unit tests, then the QEMU boot tests against the artifacts just built, then a bounded
# fuzzing run of each metadata fuzz target.
test: build lint
	cargo test --workspace --locked
	@$(MAKE) --no-print-directory fuzz

# No time bomb, shown: the whole suite with every clock FUTURE_DAYS after the commit
# (docs/testing.md). Everything is built first at the real time; then cargo runs each test
# binary through scripts/future-clock.sh (libfaketime, one offset for every process), the
# host-side `phase` is the dynamically linked build (a static binary ignores LD_PRELOAD),
# and the harness starts every guest's RTC at its own, moved clock.
FUTURE_DAYS ?= 730
test-future: build lint
	cargo test --workspace --locked --no-run
	@export PHASE_FUTURE_OFFSET=$$(scripts/future-clock.sh --offset $(FUTURE_DAYS)); \
	  scripts/future-clock.sh --check && \
	  PHASE_HOST_PHASE=$(CURDIR)/target/debug/phase \
	  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$(CURDIR)/scripts/future-clock.sh \
	  cargo test --workspace --locked --no-fail-fast

# cargo-fuzz needs nightly -Z flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := canonical_parse verify_metadata
fuzz: build
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p release/fuzz/corpus/$$t; \
	  cp -f $(OUT)/release/release.json $(OUT)/trusted-root.json release/fuzz/corpus/$$t/; \
	  if [ $$t = verify_metadata ]; then \
	    cargo run -q --locked -p phase-release --example fuzz-corpus -- \
	      $(OUT)/release/release.json release/fuzz/corpus/$$t || exit 1; fi; \
	  (cd release && RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS)) \
	    > $(OUT)/fuzz-$$t.log 2>&1 || { tail -40 $(OUT)/fuzz-$$t.log; echo "fuzz: $$t FAILED"; exit 1; }; \
	  echo "fuzz: $$t: $$(grep -a -o 'Done [0-9]* runs in [0-9]* second(s)' $(OUT)/fuzz-$$t.log), 0 crashes"; \
	done

bench: build
	@scripts/bench.sh

clean:
	rm -rf $(OUT) target build
