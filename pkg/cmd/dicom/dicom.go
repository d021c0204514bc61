// Package dicom groups the DICOM test tools under `medplum-agent dicom`.
package dicom

import (
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/echo"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/send"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// NewCmdDICOM builds the `dicom` parent command.
func NewCmdDICOM(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dicom",
		Short: "Check DICOM peers and send them files",
		Long: `Test tools for DICOM networking: C-ECHO to check that a peer answers and accepts our
AE titles, and C-STORE to send Part-10 files, with timeouts and exit codes.`,
	}
	cmd.AddCommand(echo.NewCmdEcho(f, nil))
	cmd.AddCommand(send.NewCmdSend(f, nil))
	return cmd
}
