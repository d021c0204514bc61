//go:build !linux

package service

// Notify does nothing outside Linux: there is no systemd to tell.
func Notify(string) error { return nil }
