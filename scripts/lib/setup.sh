# Shared by scripts/test and scripts/demo: install what is missing on a
# Debian or Ubuntu machine. Every step checks first, so a second run is quick
# and needs no network.

TANSU_VERSION=0.6.0

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# step TEXT [ESTIMATE]: says what the next long step does and roughly how
# long it takes on a 2-core machine, with the time of day, and how long the
# step before it took; so nobody stares at a silent terminal.
STEP_STARTED=
STEP_TEXT=
step() {
    step_done
    STEP_STARTED=$SECONDS
    STEP_TEXT=$1
    printf '\033[1m==> %s %s%s\033[0m\n' "$(date +%H:%M:%S)" "$1" "${2:+ ($2)}" >&2
}
# step_done: says how long the current step took.
step_done() {
    if [ -n "$STEP_STARTED" ]; then
        local took=$((SECONDS - STEP_STARTED))
        printf '    %s took %dm%02ds\n' "$STEP_TEXT" $((took / 60)) $((took % 60)) >&2
        STEP_STARTED=
    fi
}

# warn_if_disk_is_short GB: says, before a long build, that the disk holding
# target/ has less than GB gigabytes free; a build that runs out fails at link
# time with errors that do not say why.
warn_if_disk_is_short() {
    local dir free_gb
    dir="${CARGO_TARGET_DIR:-target}"
    [ -d "$dir" ] || dir=.
    free_gb=$(df -P -BG "$dir" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
    if [ "$free_gb" -lt "$1" ]; then
        say "warning: ${free_gb} GB free under $dir; a build from scratch needs about $1 GB"
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root to run: $*" >&2
        return 1
    fi
}

# need_debian_packages PKG... : installs the packages that are not installed.
need_debian_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing Debian packages: ${missing[*]}" "about a minute, more for chromium or qemu"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        step_done
    fi
}

# The Rust toolchain cannot come from Debian (too old for edition 2024).
need_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs)" >&2
        exit 1
    fi
}

# The C build dependencies of the librdkafka bundled by the rdkafka crate.
need_build_dependencies() {
    need_debian_packages build-essential cmake pkg-config libcurl4-openssl-dev libsasl2-dev libssl-dev zlib1g-dev
}

# kafka-python and zstandard, for independent checks of what is on a topic.
need_kafka_python() {
    if python3 -c 'import kafka, zstandard' 2>/dev/null; then
        return
    fi
    need_debian_packages python3 python3-pip
    step "installing kafka-python and zstandard with pip" "seconds"
    python3 -m pip install --quiet kafka-python zstandard 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages kafka-python zstandard
    step_done
}

CARGO_DEB_VERSION=3.8.0

# What scripts/package needs: cargo-deb, the arm64 cross toolchain and Rust
# target, and perl and make for the OpenSSL linked into librdkafka.
need_packaging() {
    need_rust
    need_build_dependencies
    need_debian_packages gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross \
        perl make dpkg-dev
    rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
        rustup target add aarch64-unknown-linux-gnu
    export PATH="$PATH:$HOME/.cargo/bin"
    if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
        step "installing cargo-deb $CARGO_DEB_VERSION" "about 3 minutes"
        cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
        step_done
    fi
}

# The Tansu broker, built once into ~/.cargo/bin: about 19 minutes on 2
# cores, most of a first run of scripts/test (scripts/demo does without it).
need_tansu() {
    export PATH="$PATH:$HOME/.cargo/bin"
    if command -v tansu >/dev/null 2>&1; then
        return
    fi
    need_build_dependencies
    step "building the Tansu broker $TANSU_VERSION into ~/.cargo/bin (once; about 19 minutes on 2 cores)"
    cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
    step_done
}

# What scripts/powercut needs: qemu (TCG is enough), a static busybox for the
# guest, mkfs.ext4 for its disk, objcopy to strip the agent, and the package
# lists, so that Debian's kernel package can be downloaded (not installed).
need_powercut() {
    need_debian_packages qemu-system-x86 busybox-static e2fsprogs binutils file python3
    if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
        say "updating the package lists (for Debian's kernel package)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    fi
}
