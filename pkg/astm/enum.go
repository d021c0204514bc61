package astm

import (
	"fmt"
	"slices"
	"strings"
)

// The option types below (Packing, InputFormat, Split, Trailer) are small
// enums named by the flags of the replay tool; these helpers keep their
// String and Parse functions alike.

// enumString returns names[v], or typ(v) for a value without a name.
func enumString[T ~int](names []string, typ string, v T) string {
	if v < 0 || int(v) >= len(names) {
		return fmt.Sprintf("%s(%d)", typ, int(v))
	}
	return names[v]
}

// parseEnum returns the value whose name is name; what says what was being
// parsed in the error.
func parseEnum[T ~int](names []string, what, name string) (T, error) {
	if i := slices.Index(names, name); i >= 0 {
		return T(i), nil
	}
	last := len(names) - 1
	return 0, fmt.Errorf("astm: unknown %s %q (want %s or %s)", what, name, strings.Join(names[:last], ", "), names[last])
}
