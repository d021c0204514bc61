#!/bin/sh
# Before the package is removed (not before an upgrade): stop and disable
# the service.
set -e

case "$1" in
	remove | purge | 0) ;; # deb: remove; rpm: 0 = no version left
	*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl disable --now medplum-agent.service >/dev/null 2>&1 || true
fi
