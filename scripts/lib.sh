# Shared by scripts/serve.sh and scripts/test.sh: installs what sandpit needs on a fresh Debian 12
# machine and builds it. Sourced, not run.

SANDPIT_TRIPLE=x86_64-unknown-linux-gnu

# Debian packages sandpit uses: debootstrap builds the default image; bubblewrap is the benchmark
# baseline; nodejs/npm run the compatibility test against the published npm client; chromium
# (headless) is the browser of the preview-URL and web-console tests (driven over CDP by
# playwright-core, so no chromedriver); python3-venv and curl run the API fuzzer
# (scripts/fuzz-api.sh). runsc (gVisor) runs the `gvisor` isolation tier; it is pinned because its
# syscall coverage is what docs/isolation.md describes. chromium is pinned to the build the
# console test was written against; Debian's security archive keeps only its newest build, so
# when the pinned one is gone the newest is installed instead (with a warning), and a newer one
# already installed is kept.
RUNSC_VERSION=0.0~20221219.0-2+b3
CHROMIUM_VERSION=156.0.8078.129-1~deb12u1
MATPLOTLIB_VERSION=3.6.3-1+b1
install_debian_packages() {
  # postgresql-15: the server the PostgreSQL store tests start (Debian 12's major version).
  local wanted=(debootstrap bubblewrap ca-certificates slirp4netns nftables iproute2
    python3-venv curl zstd s3fs postgresql-15 postgresql-client-15)
  # The soak program's plot (scripts/soak-plot.py).
  [ "$(dpkg-query -W -f='${Version}' python3-matplotlib 2>/dev/null)" = "$MATPLOTLIB_VERSION" ] ||
    wanted+=("python3-matplotlib=$MATPLOTLIB_VERSION")
  command -v node >/dev/null 2>&1 || wanted+=(nodejs)
  command -v npm >/dev/null 2>&1 || wanted+=(npm)
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "$(dpkg-query -W -f='${Version}' runsc 2>/dev/null)" = "$RUNSC_VERSION" ] ||
    missing+=("runsc=$RUNSC_VERSION")
  # chromium: the pinned build on a machine without one; a newer one already installed (a
  # security update) is kept, never downgraded.
  local chromium
  chromium=$(dpkg-query -W -f='${Status} ${Version}' chromium 2>/dev/null || true)
  case "$chromium" in
  "install ok installed $CHROMIUM_VERSION") ;;
  "install ok installed "*) echo "note: chromium ${chromium##* } kept (tested with $CHROMIUM_VERSION)" ;;
  *) missing+=("chromium=$CHROMIUM_VERSION") ;;
  esac
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      # Only a pinned chromium that Debian no longer publishes may fail here: take the newest.
      case " ${missing[*]} " in *" chromium=$CHROMIUM_VERSION "*) ;; *) return 1 ;; esac
      echo "warning: chromium $CHROMIUM_VERSION is no longer published; installing the newest" >&2
      local i
      for i in "${!missing[@]}"; do
        [ "${missing[$i]}" != "chromium=$CHROMIUM_VERSION" ] || missing[i]=chromium
      done
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
  fi
}

# The web console's assets (crates/server/console/dist, from its pinned npm lock), embedded into
# the server binary by crates/server/build.rs: built before cargo so `sandpit serve` has them.
# (A binary built without them serves a page at /console saying how to build them.)
build_console() {
  echo "==> building the web console (crates/server/console)"
  (cd crates/server/console && npm ci --no-audit --no-fund && npm run build && npm run check)
}

# A Python venv at $1 holding exactly the hash-pinned lock $2 (made by scripts/py-lock.sh),
# installed with `pip --require-hashes`; rebuilt whenever the lock changes.
python_venv() {
  local venv=$1 lock=$2
  if ! cmp -s "$lock" "$venv/requirements.txt" 2>/dev/null; then
    echo "==> Python venv in $venv (from $lock)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$lock"
    cp "$lock" "$venv/requirements.txt"
  fi
}

# Builds the workspace with the given cargo profile, plus the agent as a static binary (it runs as
# PID 1 inside sandboxes whose images may have no or another libc).
build_sandpit() {
  local profile=$1 dir
  [ "$profile" = release ] && dir=release || dir=debug
  build_console
  echo "==> building sandpit ($profile)"
  cargo build --workspace --bins --profile "$profile"
  echo "==> building the static agent"
  # Not position-independent: a static PIE relocates its GOT and .data.rel.ro at every start,
  # which made ~0.5 MiB (1.3 MiB in debug) of private dirty memory in every sandbox's agent
  # (issue 16); a fixed-address binary keeps those pages clean and shared through the page
  # cache. The agent's ASLR guards nothing: the tenant's code runs as the same user beside it.
  RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    cargo build -p sandpit-agent --profile "$profile" --target "$SANDPIT_TRIPLE"
  local target=${CARGO_TARGET_DIR:-$PWD/target}
  SANDPIT_BIN_DIR="$target/$dir"
  export SANDPIT_AGENT_BIN="$target/$SANDPIT_TRIPLE/$dir/sandpit-agent"
}
