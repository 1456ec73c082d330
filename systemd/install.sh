#!/usr/bin/env bash
# Installs edgetoken as a systemd service on a Debian / Raspberry Pi OS machine. Idempotent: running
# it again upgrades the package and the unit, and never replaces an existing key or config.
#
# Usage: sudo systemd/install.sh [--package SPEC] [--no-npm] [--no-start] [--mqtt-password-file FILE]
#   --package SPEC  what `npm install -g` installs (default: edgetoken; or a tarball from `npm pack`,
#                   or a directory with a built checkout)
#   --no-npm        do not run npm: edgetoken is already installed (copied, packaged, ...)
#   --no-start      install and enable, but do not (re)start the service
#   --mqtt-password-file FILE  the MQTT broker password (FILE, or - for stdin), stored as the
#                   systemd credential mqtt-password (encrypted with systemd-creds where available);
#                   replaces a previous one. The config then needs mqtt.username but no password.
#
# Steps:
#   1. npm install -g (needs node >= 20.18.1 on PATH)
#   2. /etc/edgetoken/ (config.json is yours to write; see config/ in the package)
#   3. a 32-byte random key, encrypted with systemd-creds into /etc/credstore.encrypted/edgetoken.key
#      (systemd >= 250); on older systemd a root-only 0600 file /etc/edgetoken/edgetoken.key
#   4. the unit in /etc/systemd/system, a drop-in when the binary is not /usr/bin/edgetoken, and
#      on Azure Arc servers (group himds) one with SupplementaryGroups=himds (managed identity)
#   5. systemctl daemon-reload, enable, and restart when config.json exists
set -euo pipefail

package=edgetoken
run_npm=1
start=1
mqtt_password_file=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --package)
      [[ $# -ge 2 ]] || { echo "install.sh: --package needs a value" >&2; exit 2; }
      package=$2
      shift 2
      ;;
    --no-npm) run_npm=0; shift ;;
    --no-start) start=0; shift ;;
    --mqtt-password-file)
      [[ $# -ge 2 ]] || { echo "install.sh: --mqtt-password-file needs a value" >&2; exit 2; }
      mqtt_password_file=$2
      shift 2
      ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
command -v systemctl >/dev/null 2>&1 || die "systemctl not found: this script is for systemd machines"

unit_name=edgetoken.service
unit_dir=/etc/systemd/system
dropin_dir=$unit_dir/$unit_name.d
config_dir=/etc/edgetoken
credstore=/etc/credstore.encrypted
encrypted_key=$credstore/edgetoken.key
plain_key=$config_dir/edgetoken.key

# 1. The package.
if [[ $run_npm -eq 1 ]]; then
  command -v node >/dev/null 2>&1 || die "node not found (install Node.js 20.18.1 or newer first)"
  node -e 'const [a,b,c]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&(b>18||(b===18&&c>=1)))?0:1)' ||
    die "node $(node --version) is too old: edgetoken needs 20.18.1 or newer"
  say "npm install -g $package"
  npm install -g --omit=dev "$package"
fi
bin=$(command -v edgetoken || true)
[[ -n $bin ]] || die "edgetoken is not on PATH after installing; use --package or install it first"
case $bin in
  /home/* | /root/*) die "$bin is under a home directory (nvm?), which the hardened unit cannot see (ProtectHome=yes): install node system-wide" ;;
esac
# npm links bin -> <prefix>/lib/node_modules/edgetoken/dist/cli.js; the package files sit next to it.
bin_real=$(readlink -f -- "$bin")
say "edgetoken: $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"

# The unit ships in the package (package.json "files": systemd/); fall back to this script's checkout.
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
unit_src=""
for candidate in "$(dirname "$bin_real")/../systemd/$unit_name" "$(npm root -g 2>/dev/null || true)/edgetoken/systemd/$unit_name" "$script_dir/$unit_name"; do
  if [[ -f $candidate ]]; then
    unit_src=$candidate
    break
  fi
done
[[ -n $unit_src ]] || die "cannot find $unit_name (looked next to $bin, in npm root -g and in $script_dir)"

# 2. Configuration directory: world-readable, root-owned; the config holds no secret.
install -d -m 0755 -o root -g root "$config_dir"

# 3. The store key. Never regenerated: a new key would make the existing token store unreadable.
systemd_version=$(systemctl --version | awk 'NR == 1 { print $2 }')
systemd_version=${systemd_version%%[!0-9]*}
if [[ ${systemd_version:-0} -ge 250 ]] && command -v systemd-creds >/dev/null 2>&1; then
  install -d -m 0700 -o root -g root "$credstore"
  if [[ -s $encrypted_key ]]; then
    say "key: keeping $encrypted_key"
  else
    say "key: generating and encrypting $encrypted_key (systemd-creds, host key / TPM2)"
    # The plaintext only ever exists in the pipe.
    (umask 077 && head -c 32 /dev/urandom | systemd-creds encrypt --name=edgetoken.key - "$encrypted_key.tmp")
    chmod 0600 "$encrypted_key.tmp"
    mv -f -- "$encrypted_key.tmp" "$encrypted_key"
  fi
  rm -f -- "$dropin_dir/20-credential.conf"
else
  # systemd < 250 has no systemd-creds: a root-only file, handed to the service by LoadCredential=
  # (systemd >= 247). It protects against other local users, not against someone with the SD card.
  say "key: systemd ${systemd_version:-unknown} has no systemd-creds; using a root-only key file"
  if [[ -s $plain_key ]]; then
    say "key: keeping $plain_key"
  else
    (umask 077 && head -c 32 /dev/urandom >"$plain_key.tmp")
    mv -f -- "$plain_key.tmp" "$plain_key"
  fi
  chown root:root "$plain_key"
  chmod 0600 "$plain_key"
  install -d -m 0755 "$dropin_dir"
  printf '[Service]\nLoadCredential=edgetoken.key:%s\n' "$plain_key" >"$dropin_dir/20-credential.conf"
fi

# 3b. The MQTT broker password, as the credential mqtt-password ($CREDENTIALS_DIRECTORY/mqtt-password,
#     which edgetoken reads when the config sets no password), so it never sits in the config file.
if [[ -n $mqtt_password_file ]]; then
  [[ $mqtt_password_file == - || -f $mqtt_password_file ]] || die "--mqtt-password-file: no such file: $mqtt_password_file"
  install -d -m 0755 "$dropin_dir"
  if [[ ${systemd_version:-0} -ge 250 ]] && command -v systemd-creds >/dev/null 2>&1; then
    (umask 077 && systemd-creds encrypt --name=mqtt-password "$mqtt_password_file" "$credstore/mqtt-password.tmp")
    mv -f -- "$credstore/mqtt-password.tmp" "$credstore/mqtt-password"
    printf '[Service]\nLoadCredentialEncrypted=mqtt-password:%s\n' "$credstore/mqtt-password" >"$dropin_dir/30-mqtt-password.conf"
  else
    (umask 077 && cat -- "$mqtt_password_file" >"$config_dir/mqtt-password.tmp")
    chown root:root "$config_dir/mqtt-password.tmp"
    mv -f -- "$config_dir/mqtt-password.tmp" "$config_dir/mqtt-password"
    printf '[Service]\nLoadCredential=mqtt-password:%s\n' "$config_dir/mqtt-password" >"$dropin_dir/30-mqtt-password.conf"
  fi
  say "mqtt password: stored as the credential mqtt-password (drop-in $dropin_dir/30-mqtt-password.conf)"
fi

# 4. The unit, and a drop-in when the binary lives elsewhere (e.g. /usr/local/bin with nvm or a
#    /usr/local npm prefix). The unit runs `edgetoken run`.
install -m 0644 -o root -g root "$unit_src" "$unit_dir/$unit_name"
if [[ $bin != /usr/bin/edgetoken ]] && [[ $(readlink -f /usr/bin/edgetoken 2>/dev/null || true) != "$bin_real" ]]; then
  install -d -m 0755 "$dropin_dir"
  printf '[Service]\nExecStart=\nExecStart=%s run\n' "$bin" >"$dropin_dir/10-execstart.conf"
  say "unit: ExecStart=$bin run (drop-in $dropin_dir/10-execstart.conf)"
else
  rm -f -- "$dropin_dir/10-execstart.conf"
fi

# 4b. Azure Arc (grant managed_identity): the agent's challenge files in /var/opt/azcmagent/tokens
#     are readable by the himds group only, and its endpoint variables are not in a unit's
#     environment. Only where the agent is installed: a missing group would keep the unit from
#     starting.
if getent group himds >/dev/null 2>&1; then
  install -d -m 0755 "$dropin_dir"
  printf '[Service]\nSupplementaryGroups=himds\nEnvironment=IDENTITY_ENDPOINT=http://localhost:40342/metadata/identity/oauth2/token\nEnvironment=IMDS_ENDPOINT=http://localhost:40342\n' >"$dropin_dir/40-azure-arc.conf"
  say "azure arc: the service may read the agent's challenge files (drop-in $dropin_dir/40-azure-arc.conf)"
else
  rm -f -- "$dropin_dir/40-azure-arc.conf"
fi

# 5. Enable, and start once there is a config to start with.
systemctl daemon-reload
systemctl enable "$unit_name"
if [[ ! -f $config_dir/config.json ]]; then
  say "next: write $config_dir/config.json (examples in $(dirname "$unit_src")/../config), then: systemctl start edgetoken"
elif [[ $start -eq 1 ]]; then
  systemctl restart "$unit_name"
  say "started; follow with: journalctl -u edgetoken -f"
fi

cat <<EOF
install.sh: to sign in (the service keeps running and spooling until someone does):
  sudo systemd-run --wait --pty --collect -p User=edgetoken -p DynamicUser=yes \\
    -p StateDirectory=edgetoken -p LoadCredentialEncrypted=edgetoken.key:$encrypted_key \\
    -E EDGETOKEN_CONFIG=$config_dir/config.json -E EDGETOKEN_STATE_DIR=/var/lib/edgetoken \\
    $bin login
install.sh: a Raspberry Pi has no clock battery; for time-sync.target to wait for a real sync:
  sudo systemctl enable systemd-time-wait-sync.service
EOF
