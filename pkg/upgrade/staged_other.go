//go:build !unix

package upgrade

import (
	"context"
	"log/slog"
)

// canReplace is always true: the Windows service replaces its executable in
// place, so nothing is ever staged.
func canReplace(string) bool { return true }

// ExecStaged does nothing: there is no staged binary, and no exec either.
func ExecStaged(context.Context, string, string, *slog.Logger) {}
