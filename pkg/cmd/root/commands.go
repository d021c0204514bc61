package root

import (
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/astm"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/devserver"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/queue"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/register"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/run"
	servicecmd "github.com/medplum-agent/medplum-agent/pkg/cmd/service"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// addCommands registers the protocol and agent sub-trees.
func addCommands(root *cobra.Command, f *cmdutil.Factory) {
	root.AddCommand(hl7.NewCmdHL7(f))
	root.AddCommand(astm.NewCmdASTM(f))
	root.AddCommand(devserver.NewCmdDevServer(f, nil))
	root.AddCommand(dicom.NewCmdDICOM(f))
	root.AddCommand(run.NewCmdRun(f, nil))
	root.AddCommand(queue.NewCmdQueue(f))
	root.AddCommand(register.NewCmdRegister(f, nil))
	root.AddCommand(servicecmd.NewCmdService(f, nil))
}
