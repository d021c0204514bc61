// Package build carries the version information stamped at link time
// (-ldflags "-X .../pkg/build.Version=1.2.3 -X .../pkg/build.Commit=abc1234 -X .../pkg/build.Date=...").
package build

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the linker in release builds.
var (
	Version = ""
	Commit  = ""
	Date    = ""
)

// Info is the resolved version information of the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get resolves the version: linker values first, then the module build info
// (go install), then "dev".
func Get() Info {
	info := Info{Version: Version, Commit: Commit, Date: Date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = strings.TrimPrefix(bi.Main.Version, "v")
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.time":
				if info.Date == "" {
					info.Date = s.Value
				}
			}
		}
	}
	if info.Version == "" {
		info.Version = "0.0.0-dev"
	}
	if len(info.Commit) > 7 {
		info.Commit = info.Commit[:7]
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// AgentVersion is the version string the agent reports to the server:
// "<semver>-<7-hex commit>" like the reference, or just the semver when the
// commit is unknown. The server's upgrade logic compares with "starts with".
func AgentVersion() string {
	i := Get()
	if i.Commit == "unknown" || strings.Contains(i.Version, "-") {
		return i.Version
	}
	return i.Version + "-" + i.Commit
}
