// Package astm groups the ASTM test tools under `medplum-agent astm`.
package astm

import (
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/astm/replay"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// NewCmdASTM builds the `astm` parent command.
func NewCmdASTM(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "astm",
		Short: "Test ASTM E1381/E1394 listeners by playing an instrument",
		Long: `Test tools for ASTM E1381 (CLSI LIS01) links carrying E1394 (LIS2) records, over TCP
or a serial port.`,
	}
	cmd.AddCommand(replay.NewCmdReplay(f, nil))
	return cmd
}
