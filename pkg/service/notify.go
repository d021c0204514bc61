// Package service holds the operating-system integration of the daemon:
// readiness and state notifications to systemd, running under the Windows
// service manager, and installing, inspecting and removing the service on
// systemd, launchd and Windows. The packaged unit, plist, Dockerfile and
// package scripts live in packaging/.
package service

// Service manager states sent with Notify.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)
