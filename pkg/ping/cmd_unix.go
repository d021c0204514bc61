//go:build !windows

package ping

import "strconv"

// commandArgs are the arguments of the system ping for count echoes.
func commandArgs(host string, count int) []string {
	return []string{"-c", strconv.Itoa(count), host}
}
