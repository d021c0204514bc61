package register

import (
	"encoding/json"
	"fmt"
	"strings"

	servicecmd "github.com/medplum-agent/medplum-agent/pkg/cmd/service"
	"github.com/medplum-agent/medplum-agent/pkg/service"
)

// printResult writes the summary to standard output: one line per thing
// looked at, styled on a terminal, plain when piped, or JSON.
func printResult(opts *Options, res *Result) error {
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	r := opts.IO.OutRenderer()
	bold := r.NewStyle().Bold(true)
	action := func(a service.Action) string { return servicecmd.ActionText(r, a, res.DryRun) }

	var b strings.Builder
	agent := res.Agent.Reference
	if agent == "" {
		agent = "new Agent"
	}
	fmt.Fprintf(&b, "Agent %s (%s): %s", bold.Render(res.Agent.Name), agent, action(res.Agent.Action))
	if len(res.Agent.Channels) > 0 {
		fmt.Fprintf(&b, ", channels %s", strings.Join(res.Agent.Channels, ", "))
	}
	b.WriteString("\n")
	for _, e := range res.Endpoints {
		ref := e.Reference
		if ref == "" {
			ref = "new Endpoint"
		}
		fmt.Fprintf(&b, "  channel %s  %s -> %s  (%s): %s\n", bold.Render(e.Channel), e.Address, e.Bot, ref, action(e.Action))
	}
	fmt.Fprintf(&b, "agent.properties %s: %s\n", res.Properties.Target, action(res.Properties.Action))
	for _, s := range res.Service {
		b.WriteString(servicecmd.StepLine(r, s, res.DryRun))
	}
	switch {
	case res.DryRun:
		b.WriteString("Dry run: nothing was changed.\n")
	case !res.Changed:
		b.WriteString("Nothing to do: everything was already up to date.\n")
	}
	if _, err := fmt.Fprint(opts.IO.Out, b.String()); err != nil {
		return err
	}
	if !res.DryRun && !opts.InstallService {
		fmt.Fprintf(opts.IO.ErrOut, "Start the agent with: medplum-agent run --config %s\n", res.Properties.Target)
	}
	return nil
}
