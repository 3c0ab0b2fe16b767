#!/usr/bin/env bash
# Role: installs the host tools that image/build.sh and testvm/vm.sh need (mkosi 24 and
# systemd-repart 254 from bookworm-backports, mtools, erofs-utils, veritysetup, qemu, OVMF, ...).
# It adds the bookworm-backports suite to apt by reusing the mirror URI the machine's own apt
# sources already name. It must not write any mirror host into the repository, must not
# remove or replace the machine's existing apt sources, and must not run apt-get update with
# only the backports list (that deletes the other suites' package lists).
set -euo pipefail

want_mkosi_major=24
parts_dir=/etc/apt/sources.list.d
bpo_file="$parts_dir/jaco-bookworm-backports.sources"

log() { printf 'setup-host: %s\n' "$*" >&2; }

have_tools() {
    command -v mkosi >/dev/null 2>&1 || return 1
    local mv
    mv="$(mkosi --version 2>/dev/null | awk '{print $2}')"
    [[ "${mv%%.*}" -ge "$want_mkosi_major" ]] 2>/dev/null || return 1
    local rv
    rv="$(systemd-repart --version 2>/dev/null | awk 'NR==1{print $2}')"
    [[ "${rv:-0}" -ge 254 ]] 2>/dev/null || return 1
    local t
    for t in bootctl mcopy mkfs.fat mkfs.erofs mkfs.ext4 zstd veritysetup qemu-system-x86_64 xorriso qemu-img sfdisk bwrap; do
        command -v "$t" >/dev/null 2>&1 || return 1
    done
    /usr/bin/python3 -c "import pefile" 2>/dev/null || return 1
    [[ -e /usr/share/OVMF/OVMF_CODE_4M.fd || -e /usr/share/OVMF/OVMF_CODE.fd ]] || return 1
    return 0
}

# The Debian mirror URI the machine already uses (deb822 or one-line format).
debian_mirror_uri() {
    local f uri
    for f in "$parts_dir"/*.sources; do
        [[ -e "$f" ]] || continue
        [[ "$f" == "$bpo_file" ]] && continue
        # First URIs: of a stanza whose Suites: names bookworm (not -security).
        uri="$(awk '
            /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )bookworm( |$)/) { print u; exit } u=""; s=""; next }
            /^URIs:/ { u=$2 }
            /^Suites:/ { $1=""; s=$0 " " }
            END { if (u != "" && s ~ /(^| )bookworm( |$)/) print u }' "$f")"
        if [[ -n "$uri" ]]; then printf '%s\n' "$uri"; return 0; fi
    done
    for f in /etc/apt/sources.list "$parts_dir"/*.list; do
        [[ -e "$f" ]] || continue
        uri="$(awk '$1=="deb" && $0 ~ / bookworm / { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f" | head -n1)"
        if [[ -n "$uri" ]]; then printf '%s\n' "$uri"; return 0; fi
    done
    return 1
}

if have_tools; then
    log "tools present"
    exit 0
fi

[[ "$(id -u)" -eq 0 ]] || { log "must run as root to install packages"; exit 1; }

if [[ ! -e "$bpo_file" ]]; then
    uri="$(debian_mirror_uri)" || { log "no Debian bookworm source found in /etc/apt"; exit 1; }
    log "adding bookworm-backports from the machine's configured mirror"
    cat >"$bpo_file" <<SRC
# Added by jaco image/setup-host.sh: bookworm-backports from the mirror already configured here.
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

# A plain update with every list in the parts directory: keeps the other suites' lists.
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports mkosi systemd systemd-boot qemu-system-x86 qemu-utils
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    mtools dosfstools erofs-utils e2fsprogs zstd cryptsetup-bin ovmf xorriso \
    bubblewrap fdisk debian-archive-keyring apt dpkg-dev python3 cpio kmod squashfs-tools binutils python3-pefile
have_tools || { log "tools still missing after install"; exit 1; }
log "tools installed: mkosi $(mkosi --version | awk '{print $2}'), systemd-repart $(systemd-repart --version | awk 'NR==1{print $2}')"
