// Command gen-docs writes the man pages (man/, one per command) and the
// shell completion scripts (completions/) from medplum-agent's command
// tree. It is a development tool: cobra/doc and its Markdown renderer are
// linked here only, never into the shipped binary.
//
//	go run ./cmd/gen-docs [-man DIR] [-completions DIR]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/root"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// manDate is the date in every man page header. It is fixed so that the
// output is the same on every run and the staleness test can compare bytes;
// bump it when the pages change substantially.
var manDate = time.Date(2026, time.November, 1, 0, 0, 0, 0, time.UTC)

// Completion script file names, as the shells' vendor directories expect
// them (zsh wants the function name, _medplum-agent).
var completions = []struct {
	file string
	gen  func(*cobra.Command, io.Writer) error
}{
	{"medplum-agent.bash", func(c *cobra.Command, w io.Writer) error { return c.GenBashCompletionV2(w, true) }},
	{"_medplum-agent", func(c *cobra.Command, w io.Writer) error { return c.GenZshCompletion(w) }},
	{"medplum-agent.fish", func(c *cobra.Command, w io.Writer) error { return c.GenFishCompletion(w, true) }},
	{"medplum-agent.ps1", func(c *cobra.Command, w io.Writer) error { return c.GenPowerShellCompletionWithDesc(w) }},
}

func main() {
	manDir := flag.String("man", "man", "directory for the man pages")
	complDir := flag.String("completions", "completions", "directory for the completion scripts")
	flag.Parse()
	if err := generate(*manDir, *complDir); err != nil {
		fmt.Fprintln(os.Stderr, "gen-docs:", err)
		os.Exit(1)
	}
}

// generate replaces the man pages in manDir and the completion scripts in
// complDir with fresh ones.
func generate(manDir, complDir string) error {
	cmd := root.NewCmdRoot(cmdutil.New())
	// No "Auto generated" footer: it carries the date. Children inherit it.
	cmd.DisableAutoGenTag = true

	// Pages of commands that no longer exist must not linger.
	old, err := filepath.Glob(filepath.Join(manDir, "*.1"))
	if err != nil {
		return err
	}
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(manDir, 0o755); err != nil {
		return err
	}
	header := &doc.GenManHeader{Section: "1", Source: "medplum-agent", Manual: "medplum-agent manual", Date: &manDate}
	if err := doc.GenManTreeFromOpts(cmd, doc.GenManTreeOptions{Header: header, Path: manDir, CommandSeparator: "-"}); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}

	if err := os.MkdirAll(complDir, 0o755); err != nil {
		return err
	}
	for _, c := range completions {
		var b bytes.Buffer
		if err := c.gen(cmd, &b); err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		if err := os.WriteFile(filepath.Join(complDir, c.file), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
