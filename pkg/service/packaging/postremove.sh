#!/bin/sh
# After the package is removed. On `apt purge`, also delete the state
# (including messages still in the durable queue) and the logs; dpkg purges
# the configuration itself. The medplum-agent user stays, as Debian policy
# asks, so that files it owned never pass to a new user with its uid.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi

if [ "$1" = purge ]; then
	rm -rf /var/lib/medplum-agent /var/log/medplum-agent
fi
