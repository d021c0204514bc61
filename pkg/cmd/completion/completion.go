// Package completion implements `medplum-agent completion SHELL`.
package completion

import (
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// NewCmdCompletion builds the command that prints a shell completion script.
func NewCmdCompletion(f *cmdutil.Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a completion script for the given shell to standard output.

  bash:       source <(medplum-agent completion bash)
  zsh:        medplum-agent completion zsh > "${fpath[1]}/_medplum-agent"
  fish:       medplum-agent completion fish > ~/.config/fish/completions/medplum-agent.fish
  powershell: medplum-agent completion powershell | Out-String | Invoke-Expression`,
		ValidArgs:             []string{"bash", "zsh", "fish", "powershell"},
		Args:                  cmdutil.ExactArgs(1),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := f.IOStreams.Out
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(out)
			}
			return cmdutil.FlagErrorf("unsupported shell %q: choose bash, zsh, fish or powershell", args[0])
		},
	}
}
