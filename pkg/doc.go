// Package pkg is the root of medplum-agent's packages. Everything below pkg/ is
// private to this module: the import paths are not a public API and may change
// in any release.
package pkg
