#!/usr/bin/env bash
# Install the packages needed for a local single-node Slurm (Debian/Ubuntu).
# Idempotent: packages that are already installed are skipped.
#   sudo launchers/slurm_local/install.sh
set -euo pipefail

PKGS=(slurm-wlm munge slurmdbd mariadb-server)

die() { echo "install.sh: ERROR: $*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
    die "must run as root (try: sudo $0)"
fi
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "apt-get/dpkg not found: this kit supports Debian/Ubuntu only. Install ${PKGS[*]} by hand."
fi

missing=()
for p in "${PKGS[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        echo "install.sh: $p already installed"
    else
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install.sh: all packages present, nothing to do"
    exit 0
fi

echo "install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || die "apt-get update failed (no network / no package mirror?)"
# policy-rc.d: on machines with an init system the postinst scripts would try to
# start munge/mariadb/slurm services with the *system* config; start.sh runs
# its own private daemons instead, so keep the package scripts from starting any.
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed"

# On a systemd host the packages enable slurmctld/slurmd/slurmdbd/mariadb units
# that would start at the next boot with the kit's /etc/slurm config (or a
# second MariaDB); start.sh runs its own daemons, so disable the ones we just
# installed.  munge is left alone (start.sh reuses a running munged).
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    units=()
    for p in "${missing[@]}"; do
        case $p in
            slurm-wlm) units+=(slurmctld slurmd) ;;
            slurmdbd) units+=(slurmdbd) ;;
            mariadb-server) units+=(mariadb) ;;
        esac
    done
    if [[ ${#units[@]} -gt 0 ]]; then
        systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
        echo "install.sh: disabled system units ${units[*]} (re-enable with: systemctl enable ${units[*]})"
    fi
fi

for b in slurmctld slurmd slurmdbd sacctmgr sbatch munged mariadbd mariadb-install-db; do
    command -v "$b" >/dev/null 2>&1 || die "expected binary '$b' not on PATH after install"
done
echo "install.sh: done ($(slurmctld -V 2>/dev/null || true))"
