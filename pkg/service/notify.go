// Package service holds the operating-system integration of the daemon:
// readiness and state notifications to the service manager.
package service

// Service manager states sent with Notify.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)
