// Package hl7 groups the HL7 v2 test tools under `medplum-agent hl7`.
package hl7

import (
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/hl7/listen"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/hl7/send"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// NewCmdHL7 builds the `hl7` parent command.
func NewCmdHL7(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hl7",
		Short: "Send and receive HL7 v2 messages over MLLP",
		Long: `Test tools for HL7 v2 over MLLP, wire-compatible with 'medplum hl7 send' and
'medplum hl7 listen' (@medplum/cli), with timeouts, exit codes and a load mode.`,
	}
	cmd.AddCommand(send.NewCmdSend(f, nil))
	cmd.AddCommand(listen.NewCmdListen(f, nil))
	return cmd
}
