//go:build unix && !linux

package readonly

import (
	"errors"
	"testing"
)

func bindReadOnly(testing.TB, string) error {
	return errors.New("making a directory read-only for root needs a Linux bind mount")
}
