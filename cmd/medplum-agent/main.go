// Command medplum-agent is the Medplum edge agent and its device test tools.
package main

import (
	"os"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/root"
)

func main() {
	os.Exit(root.Main())
}
