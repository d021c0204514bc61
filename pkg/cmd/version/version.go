// Package version implements `medplum-agent version`.
package version

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/build"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// Options holds the flags of `version`.
type Options struct {
	IO   *iostreams.IOStreams
	JSON bool
}

// NewCmdVersion builds the command; runF replaces the run function in tests.
func NewCmdVersion(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cmdutil.NoArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return versionRun(opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print as JSON")
	return cmd
}

func versionRun(opts *Options) error {
	info := build.Get()
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		return enc.Encode(info)
	}
	_, err := fmt.Fprintln(opts.IO.Out, Format(info))
	return err
}

// Format renders the one-line human form, also used by --version.
func Format(i build.Info) string {
	s := fmt.Sprintf("medplum-agent %s (commit %s", i.Version, i.Commit)
	if i.Date != "" {
		s += ", built " + i.Date
	}
	return s + ", " + i.GoVersion + " " + i.Platform + ")"
}
