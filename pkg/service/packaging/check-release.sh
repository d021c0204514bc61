#!/usr/bin/env bash
# CI check of the release pipeline:
#   1. goreleaser check validates .goreleaser.yaml;
#   2. a snapshot release builds the archives and the deb and rpm packages,
#      for linux/amd64 only unless FULL=1 (the whole matrix, minutes more);
#      publishing, signing, the container image (no Docker engine in CI) and
#      the SBOMs (syft is not installed) are skipped;
#   3. the deb is unpacked into a throwaway root with dpkg -x, and the binary,
#      unit, configuration, man pages and completions must be where they belong.
#
# GoReleaser comes from the Go module proxy, installed into $TOOLS_BIN
# (default .peers/bin) when that version is missing. v2.16.0 is the newest
# release that builds with Go 1.26 from the proxy (v2.17 needs a module the
# proxy refuses, v2.18 needs Go 1.27).
#
# Run from anywhere: pkg/service/packaging/check-release.sh
set -euo pipefail

cd "$(dirname "$0")/../../.."
GORELEASER_VERSION="${GORELEASER_VERSION:-v2.16.0}"
TOOLS_BIN="${TOOLS_BIN:-$PWD/.peers/bin}"
goreleaser="$TOOLS_BIN/goreleaser"

if ! "$goreleaser" --version 2>/dev/null | grep -q "GitVersion: *${GORELEASER_VERSION}\$"; then
	echo "installing goreleaser ${GORELEASER_VERSION} into ${TOOLS_BIN}"
	mkdir -p "$TOOLS_BIN"
	GOBIN="$TOOLS_BIN" go install "github.com/goreleaser/goreleaser/v2@${GORELEASER_VERSION}"
fi

"$goreleaser" check

if [ "${FULL:-}" != 1 ]; then
	export GORELEASER_CI=1 # .goreleaser.yaml then builds linux/amd64 only
fi
"$goreleaser" release --snapshot --clean --skip=publish,sign,docker,sbom

debs=(dist/*_amd64.deb)
if [ "${#debs[@]}" -ne 1 ] || [ ! -f "${debs[0]}" ]; then
	echo "expected one amd64 deb in dist/, found: ${debs[*]}" >&2
	exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
dpkg -x "${debs[0]}" "$root"

status=0
expect() { # expect MODE PATH: PATH exists in the package with octal MODE
	local got
	if ! got="$(stat -c %a "$root$2" 2>/dev/null)"; then
		echo "missing: $2" >&2
		status=1
	elif [ "$got" != "$1" ]; then
		echo "mode of $2 is $got, want $1" >&2
		status=1
	fi
}
expect 755 /usr/bin/medplum-agent
expect 644 /usr/lib/systemd/system/medplum-agent.service
expect 750 /etc/medplum-agent
expect 600 /etc/medplum-agent/agent.properties
expect 644 /usr/share/man/man1/medplum-agent.1
expect 644 /usr/share/man/man1/medplum-agent-run.1
expect 644 /usr/share/bash-completion/completions/medplum-agent
expect 644 /usr/share/zsh/vendor-completions/_medplum-agent
expect 644 /usr/share/fish/vendor_completions.d/medplum-agent.fish
expect 644 /usr/share/doc/medplum-agent/copyright
for page in man/*.1; do
	expect 644 "/usr/share/man/man1/$(basename "$page")"
done

# The packaged binary runs and reports the snapshot version.
if ! "$root/usr/bin/medplum-agent" version; then
	echo "the packaged binary does not run" >&2
	status=1
fi
ctrl="$root.control"
trap 'rm -rf "$root" "$ctrl"' EXIT
dpkg-deb -e "${debs[0]}" "$ctrl"
if [ "$(cat "$ctrl/conffiles")" != /etc/medplum-agent/agent.properties ]; then
	echo "conffiles: $(cat "$ctrl/conffiles"), want /etc/medplum-agent/agent.properties" >&2
	status=1
fi

echo "${debs[0]}:"
(cd "$root" && find . -mindepth 1 \( -type f -o -type l \) -printf '  /%P\n' | sort)
if [ "$status" -ne 0 ]; then
	echo "the deb's contents are wrong" >&2
	exit 1
fi
echo "release check passed"
