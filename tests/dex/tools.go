//go:build tools

// Package tools pins the real Dex the sign-in tests run: its cmd/dex at the
// commit of the v2.32.0 tag (the Go proxy refuses the tag itself, which is
// not a valid version of the v0/v1 module path, but serves the commit).
package tools

import _ "github.com/dexidp/dex/cmd/dex"
