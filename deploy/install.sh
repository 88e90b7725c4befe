#!/bin/bash
# Install or update Vigil as a systemd service (run as root; `make install-service` calls it).
#
#   /opt/vigil                      a link to the current release (the unit's paths go through it)
#   /opt/vigil.releases/RELEASE     this checkout's files and a .venv with Vigil installed from them
#                                   (`pip install .`: the runtime dependencies only, pinned in pyproject.toml)
#   /var/cache/vigil/models         the models, provisioned from PyPI packages (CacheDirectory=vigil)
#   /var/cache/vigil/pip            pip's cache, so an update downloads only what changed
#   /var/lib/vigil                  metrics (StateDirectory=vigil)
#   /etc/vigil/vigil.toml           the configuration (created once, never overwritten)
#   /etc/systemd/system/vigil.service
#
# An update never touches the running release. The new one is built beside it (code, venv, models)
# and must start (deploy/smoke.py: READY=1 from a real `vigil run`); only then does the link switch
# and the service restart. If anything fails before that, the old release keeps running and the new
# one is removed; if the restarted service does not come up, the old release and its unit come back.
# The previous release is kept for a manual rollback:
#   ln -sfn /opt/vigil.releases/PREVIOUS /opt/vigil.next && mv -T /opt/vigil.next /opt/vigil && systemctl restart vigil
#
# Overridable: PREFIX and VIGIL_USER (both rewritten into the unit); VIGIL_EXTRAS (pip extras of
# pyproject.toml, e.g. "wake-extra" or "speechbrain"); PYTHON (default /usr/bin/python3);
# VIGIL_SMOKE=0 skips the start-up check; UNIT_DIR, CONF_DIR, STATE_DIR, CACHE_DIR only for a staging
# run (the unit keeps systemd's /etc/vigil, /var/lib/vigil and /var/cache/vigil).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd /  # the service user may not read the caller's folder
PREFIX=${PREFIX:-/opt/vigil}
RELEASES=$PREFIX.releases
VIGIL_USER=${VIGIL_USER:-vigil}
VIGIL_EXTRAS=${VIGIL_EXTRAS:-}
VIGIL_SMOKE=${VIGIL_SMOKE:-1}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
CONF_DIR=${CONF_DIR:-/etc/vigil}
STATE_DIR=${STATE_DIR:-/var/lib/vigil}
CACHE_DIR=${CACHE_DIR:-/var/cache/vigil}
# The system's Python (ProtectHome=yes would hide an interpreter under /root or /home, e.g. pyenv's).
PYTHON=${PYTHON:-/usr/bin/python3}
UNIT=vigil.service

say() { printf 'install-service: %s\n' "$*"; }
die() { printf 'install-service: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo make install-service)"
case "$PREFIX" in
  /?*) PREFIX=${PREFIX%/}; RELEASES=$PREFIX.releases;;
  *) die "PREFIX must be an absolute path other than /, got '$PREFIX'";;
esac
if [ -e "$PREFIX" ] && [ ! -L "$PREFIX" ] && [ -n "$(ls -A "$PREFIX")" ] && [ ! -e "$PREFIX/.vigil-install" ]; then
  die "$PREFIX is not empty and was not made by this script; refusing to replace it"
fi
install -d -m 0755 "$RELEASES"
exec 9>"$RELEASES/.install.lock"
flock -n 9 || die "another install is running"

# 1. System packages: what Vigil needs at run time and to build its venv (the Makefile's APT_RUNTIME;
#    the test and bench tools stay off the kiosk).
make -C "$SRC" --no-print-directory apt-runtime
"$PYTHON" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11), sys.version' \
  || die "$PYTHON must be Python >= 3.11 with venv (python3-venv)"

# 2. The dedicated system user (no login, no home of its own beyond the state dir).
if ! getent group "$VIGIL_USER" >/dev/null; then
  groupadd --system "$VIGIL_USER"
fi
if ! id -u "$VIGIL_USER" >/dev/null 2>&1; then
  useradd --system --gid "$VIGIL_USER" --home-dir "$STATE_DIR" --no-create-home \
          --shell /usr/sbin/nologin --comment "Vigil voice assistant" "$VIGIL_USER"
  say "created system user $VIGIL_USER"
fi
for group in audio pulse-access; do  # pulse-access: a system-wide PulseAudio's client group
  if getent group "$group" >/dev/null && ! id -nG "$VIGIL_USER" | tr ' ' '\n' | grep -qx "$group"; then
    usermod -a -G "$group" "$VIGIL_USER"
    say "added $VIGIL_USER to group $group"
  fi
done
install -d -m 0750 -o "$VIGIL_USER" -g "$VIGIL_USER" "$STATE_DIR" "$CACHE_DIR" "$CACHE_DIR/models" "$CACHE_DIR/pip"

# 3. An install by the old script: /opt/vigil is the running tree itself. Make it a release of its
#    own (moved, then linked back at once) so that everything below works beside it.
if [ -d "$PREFIX" ] && [ ! -L "$PREFIX" ]; then
  legacy=$RELEASES/legacy-$(date -u +%Y%m%dT%H%M%SZ)
  mv "$PREFIX" "$legacy"
  ln -s "$legacy" "$PREFIX"
  say "moved the installed tree to $legacy"
fi
current=$(readlink -f "$PREFIX" 2>/dev/null || true)
[ -d "$current" ] || current=

# 4. Stage the new release: this checkout's tracked files plus new untracked ones (not .venv,
#    .stamps, bench output, caches).
release=$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$SRC" describe --always --dirty 2>/dev/null || echo nogit)
REL=$RELEASES/$release
switched=
cleanup() {
  if [ -z "$switched" ] && [ -n "${REL:-}" ] && [ -d "$REL" ]; then
    rm -rf "$REL"
    say "install failed; $REL removed${current:+, $current keeps running}"
  fi
}
trap cleanup EXIT
mkdir -m 0755 "$REL"
if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$SRC" && git ls-files -z --cached --others --exclude-standard \
     | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$REL"
else
  tar -C "$SRC" --exclude=./.venv --exclude=./.stamps --exclude=./.git --exclude=./bench/out \
      --exclude=__pycache__ --exclude=.pytest_cache --exclude='*.egg-info' --exclude=./build -cf - . \
    | tar -xf - -C "$REL"
fi
touch "$REL/.vigil-install"
say "staging $REL"

# 5. Its venv and the models, built by the service user (pip's cache and the models in its cache dir).
as_vigil() {
  runuser -u "$VIGIL_USER" -- env HOME="$STATE_DIR" XDG_CACHE_HOME="$CACHE_DIR" XDG_STATE_HOME="$STATE_DIR" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_CACHE_DIR="$CACHE_DIR/pip" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIGIL_MODELS__DIR="$CACHE_DIR/models" VIGIL_METRICS__STATE_DIR="$STATE_DIR" "$@"
}
chown -R "$VIGIL_USER:$VIGIL_USER" "$REL"
as_vigil "$PYTHON" -m venv "$REL/.venv"
as_vigil "$REL/.venv/bin/python" -m pip install -q "$REL${VIGIL_EXTRAS:+[$VIGIL_EXTRAS]}"
make -C "$REL" --no-print-directory torchaudio-cpu PY="$REL/.venv/bin/python"  # only with the speechbrain extra
case "$(readlink -f "$REL/.venv/bin/python")" in
  /home/*|/root/*|/run/user/*) die "$REL/.venv uses $(readlink -f "$REL/.venv/bin/python"), hidden by" \
                                   "ProtectHome=yes: run again with PYTHON=/usr/bin/python3";;
esac
say "installed $(as_vigil "$REL/.venv/bin/vigil" --version) into $REL/.venv${VIGIL_EXTRAS:+ (extras: $VIGIL_EXTRAS)}"
as_vigil "$REL/.venv/bin/vigil" models
as_vigil "$REL/.venv/bin/vigil" models --porcupine >/dev/null 2>&1 \
  || say "(optional) the offline porcupine build was not unpacked; [wake] engine = \"porcupine\" falls back"

# 6. Configuration (kept across installs).
install -d -m 0750 -o root -g "$VIGIL_USER" "$CONF_DIR"
if [ ! -e "$CONF_DIR/vigil.toml" ]; then
  cat >"$CONF_DIR/vigil.toml" <<'EOF'
# Vigil configuration: every key is optional (defaults: /opt/vigil/README.md, "Configuration").
# Environment variables VIGIL_<SECTION>__<KEY> in a drop-in (`systemctl edit vigil`) override it.
#
# [audio]
# device = ""            # part of a PyAudio input device name
#
# [http]
# host = "127.0.0.1"     # any other address requires a token (and an IPAddressAllow= drop-in)
# token = ""
EOF
  chown root:"$VIGIL_USER" "$CONF_DIR/vigil.toml"
  chmod 0640 "$CONF_DIR/vigil.toml"
  say "wrote $CONF_DIR/vigil.toml"
fi

# 7. Does it come up? A real `vigil run` of the new release, with this configuration, must send READY=1.
if [ "$VIGIL_SMOKE" != 0 ]; then
  as_vigil "$REL/.venv/bin/python" "$REL/deploy/smoke.py" "$REL/.venv/bin/vigil" "$CONF_DIR/vigil.toml"
fi
# The running service cannot change its own code (ProtectSystem=strict makes /opt read-only for it
# anyway); root owns the release, everyone may read it.
chown -R root:root "$REL"
chmod -R u+rwX,go+rX,go-w "$REL"

# 8. Switch: the unit of the new release, then the link (atomically: rename over the old link).
render_unit() {  # render_unit RELEASE_DIR: its unit, with this install's paths and user, into UNIT_DIR
  install -d -m 0755 "$UNIT_DIR"
  sed "s#/opt/vigil#$PREFIX#g; s#^User=vigil#User=$VIGIL_USER#; s#^Group=vigil#Group=$VIGIL_USER#" \
      "$1/deploy/$UNIT" >"$UNIT_DIR/$UNIT.tmp"
  chmod 0644 "$UNIT_DIR/$UNIT.tmp"
  mv -f "$UNIT_DIR/$UNIT.tmp" "$UNIT_DIR/$UNIT"
}
point_to() {  # point_to RELEASE_DIR
  ln -sfn "$1" "$PREFIX.next"
  mv -T "$PREFIX.next" "$PREFIX"
}
render_unit "$REL"
point_to "$REL"
switched=1
say "$PREFIX -> $REL; unit installed: $UNIT_DIR/$UNIT"

# 9. Restart, when systemd is the init system (sd_booted(3): /run/systemd/system exists). A release
#    that does not come up under systemd (READY=1 within TimeoutStartSec) is rolled back.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --quiet "$UNIT"
  if systemctl restart "$UNIT"; then
    say "restarted $UNIT on $release"
  elif [ -n "$current" ] && [ -f "$current/deploy/$UNIT" ]; then
    say "$UNIT did not come up on $release; rolling back to $(basename "$current")" >&2
    render_unit "$current"
    point_to "$current"
    systemctl daemon-reload
    systemctl restart "$UNIT" || true
    die "rolled back to $current; the failed release stays in $REL (journalctl -u vigil)"
  else
    die "$UNIT did not come up on $release (journalctl -u vigil)"
  fi
  say "status: systemctl status vigil · log: journalctl -u vigil -f"
else
  say "systemd is not the init system here (PID 1: $(ps -p 1 -o comm= 2>/dev/null || echo '?'));"
  say "on the kiosk run:  systemctl daemon-reload && systemctl enable --now $UNIT"
fi

# 10. Keep the current and the previous release; remove older ones.
for old in $(ls -1dt "$RELEASES"/*/ 2>/dev/null | tail -n +3); do
  old=${old%/}
  [ "$old" = "$REL" ] || [ "$old" = "$current" ] || { rm -rf "$old"; say "removed old release $(basename "$old")"; }
done
