#!/usr/bin/env bash
# Build shmcached's Debian package with plain dpkg-deb (no debhelper).
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR]
#
# Without --binary it builds the release binary (`cargo build --release
# --locked`). --out is where the .deb goes (default: target/debian). Prints the
# path of the .deb on its last line. DEB_MAINTAINER="Name <address>" sets the
# Maintainer field (the default is a placeholder).
#
# The package holds:
#   /usr/bin/shmcached                       the daemon (stripped)
#   /lib/systemd/system/shmcached.service    systemd/shmcached.service
#   /usr/lib/sysusers.d/shmcached.conf       systemd/shmcached.sysusers
#   /etc/shmcached/shmcached.toml            config/shmcached.toml, for systemd (a conffile)
#   /usr/share/man/man1/shmcached.1.gz       `shmcached --help-man`: the text of -h
#   /usr/share/doc/shmcached/                README.md, docs/*.md, copyright, changelog
# and maintainer scripts (packaging/debian/) that create the shmcached user and
# enable the service.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=""
out="$repo/target/debian"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --binary=*) binary=${1#*=}; shift ;;
        --out) out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done

for tool in dpkg-deb dpkg gzip; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing" >&2; exit 69; }
done

if [ -z "$binary" ]; then
    (cd "$repo" && cargo build --release --locked --bin shmcached)
    binary="$repo/target/release/shmcached"
fi
[ -x "$binary" ] || { echo "build-deb.sh: no executable at $binary" >&2; exit 66; }

# "shmcached 0.1.0 (memcached 1.6.18 compatible)" -> 0.1.0
# Maintainer: DEB_MAINTAINER="Name <address>" overrides the placeholder.
maintainer=${DEB_MAINTAINER:-shmcached developers <shmcached@localhost>}
upstream=$("$binary" -V | awk 'NR == 1 { print $2 }')
version="$upstream-1"
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$stage" "$work"' EXIT
umask 022
chmod 0755 "$stage"

# The daemon.
install -D -m 0755 "$binary" "$stage/usr/bin/shmcached"
if command -v strip >/dev/null; then
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/shmcached"
fi

# systemd: the unit and its user.
install -D -m 0644 "$repo/systemd/shmcached.service" "$stage/lib/systemd/system/shmcached.service"
install -D -m 0644 "$repo/systemd/shmcached.sysusers" "$stage/usr/lib/sysusers.d/shmcached.conf"

# The conffile: the default config with a header for systemd. `user` stays
# unset: the unit starts the daemon as the shmcached user, and the daemon
# needs -u only when started as root.
install -d -m 0755 "$stage/etc/shmcached"
{
    cat <<'EOF'
# shmcached's settings, read by shmcached.service
# (ExecStart=/usr/bin/shmcached --config /etc/shmcached/shmcached.toml).
# After a change: `systemctl restart shmcached` (docs/operations.md says what
# `systemctl reload shmcached` can change without a restart).
#
# Under systemd: the unit runs shmcached as the `shmcached` user, so leave
# `user` unset; a pid_file, if you want one, belongs in /run/shmcached (the
# unit's RuntimeDirectory); keep drain_timeout_secs + 1 below the unit's
# TimeoutStopSec (30 s); raise LimitNOFILE (65536) with max_connections.
EOF
    # The original file without its first line (which names `--config`).
    sed -e '1d' \
        -e 's|^# user = "memcache"$|# user = "memcache"   (not under systemd: the unit sets User=)|' \
        "$repo/config/shmcached.toml"
} >"$stage/etc/shmcached/shmcached.toml"
chmod 0644 "$stage/etc/shmcached/shmcached.toml"

# The man page, from the same text as `shmcached -h`.
install -d -m 0755 "$stage/usr/share/man/man1"
"$binary" --help-man | gzip -9n >"$stage/usr/share/man/man1/shmcached.1.gz"
chmod 0644 "$stage/usr/share/man/man1/shmcached.1.gz"

# Documentation: README and docs/ keep their relative links.
doc="$stage/usr/share/doc/shmcached"
install -D -m 0644 "$repo/README.md" "$doc/README.md"
install -d -m 0755 "$doc/docs"
install -m 0644 "$repo"/docs/*.md "$doc/docs/"
# copyright: ours, and the crates linked into the binary with their licenses.
{
    cat <<'EOF'
shmcached

shmcached's own license is not declared yet (Cargo.toml has no `license`
field).

/usr/bin/shmcached links these Rust crates, each under its own license. On
Debian systems the full text of the Apache License, Version 2.0 is in
/usr/share/common-licenses/Apache-2.0; the MIT and other licenses' texts come
with each crate's source.

EOF
    if command -v python3 >/dev/null &&
        host=$(rustc -vV 2>/dev/null | sed -n "s/^host: //p") &&
        meta=$(cd "$repo" && cargo metadata --format-version 1 --locked --offline \
            --filter-platform "$host" 2>/dev/null); then
        printf '%s' "$meta" | python3 "$repo/packaging/crate-licenses.py"
    else
        echo "(the list needs cargo and python3 at build time)"
    fi
} >"$doc/copyright"
chmod 0644 "$doc/copyright"
{
    echo "shmcached ($version) unstable; urgency=medium"
    echo
    echo "  * Package built from the shmcached source tree."
    echo
    echo " -- $maintainer  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y "$repo/Cargo.toml")}")"
} | gzip -9n >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

# Control files.
install -d -m 0755 "$stage/DEBIAN"
install -m 0755 "$repo"/packaging/debian/{postinst,prerm,postrm} "$stage/DEBIAN/"
echo "/etc/shmcached/shmcached.toml" >"$stage/DEBIAN/conffiles"
depends="libc6"
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$work/debian"
    printf 'Source: shmcached\n\nPackage: shmcached\nArchitecture: any\n' >"$work/debian/control"
    shlibs=$(cd "$work" && dpkg-shlibdeps -O "$stage/usr/bin/shmcached" 2>/dev/null) &&
        depends=${shlibs#shlibs:Depends=}
fi
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: shmcached
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends, adduser
Section: web
Priority: optional
Description: memcached-compatible cache daemon with prefork workers over shared memory
 shmcached speaks memcached's text protocol and takes memcached's flags. A
 supervisor process forks worker processes that accept on one port and serve
 one hashtable kept in a shared-memory segment, guarded by robust
 interprocess locks: a worker can be killed at any instant and the others go
 on serving the same data.
 .
 The package runs it as a hardened systemd service (Type=notify, watchdog,
 graceful drain on stop) as the shmcached system user, listening on
 127.0.0.1:11211. "shmcached check" is a health check for monitors.
EOF
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/shmcached_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
