package cmdutil

import "github.com/spf13/cobra"

// usageArgs turns cobra's positional-argument errors into FlagErrors so they
// exit with the usage code.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return &FlagError{Err: err}
		}
		return nil
	}
}

// ExactArgs requires exactly n positional arguments.
func ExactArgs(n int) cobra.PositionalArgs { return usageArgs(cobra.ExactArgs(n)) }

// RangeArgs requires between min and max positional arguments.
func RangeArgs(min, max int) cobra.PositionalArgs { return usageArgs(cobra.RangeArgs(min, max)) }

// MinimumNArgs requires at least n positional arguments.
func MinimumNArgs(n int) cobra.PositionalArgs { return usageArgs(cobra.MinimumNArgs(n)) }

// NoArgs rejects positional arguments.
func NoArgs() cobra.PositionalArgs { return usageArgs(cobra.NoArgs) }
