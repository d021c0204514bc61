#!/bin/sh
# After installing or upgrading the deb or rpm: create the service user, let
# it read its configuration, and make systemd see the unit. The service is
# neither enabled nor started here, since it has no configuration yet;
# `medplum-agent register ... --install-service` does both.
set -e

if ! getent passwd medplum-agent >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/medplum-agent --no-create-home \
		--shell /usr/sbin/nologin --comment "Medplum agent" medplum-agent
fi

# The directory is root's and readable by the service's group; the file is
# the service user's alone because it holds the client secret.
chown root:medplum-agent /etc/medplum-agent
chmod 0750 /etc/medplum-agent
if [ -f /etc/medplum-agent/agent.properties ]; then
	chown medplum-agent:medplum-agent /etc/medplum-agent/agent.properties
	chmod 0600 /etc/medplum-agent/agent.properties
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# After an upgrade, a running agent restarts onto the new binary.
	systemctl try-restart medplum-agent.service >/dev/null 2>&1 || true
fi
