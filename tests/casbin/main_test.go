package main

import (
	"testing"

	"github.com/casbin/casbin/v2/util"
)

// Why the checker does not use casbin's built-in globMatch or keyMatch:
// each answers differently from Argo CD's glob on patterns policies use.
func TestArgoGlobIsNotCasbinsGlobMatchNorKeyMatch(t *testing.T) {
	// Argo CD: `*` crosses `/`; casbin's globMatch (doublestar) does not.
	if !globMatch("action/apps/Deployment/restart", "action/*") {
		t.Fatal("argoGlob: action/* must match a resource action")
	}
	if ok, _ := util.GlobMatch("action/apps/Deployment/restart", "action/*"); ok {
		t.Fatal("casbin's globMatch now matches across /; reconsider using it")
	}
	// keyMatch ignores what follows the first `*`.
	if globMatch("acme/app", "*/other") {
		t.Fatal("argoGlob: */other must not match acme/app")
	}
	if !util.KeyMatch("acme/app", "*/other") {
		t.Fatal("casbin's keyMatch now looks past the first *; reconsider using it")
	}
	// Both agree with Argo CD on the plain project pattern.
	if !globMatch("acme/app", "acme/*") || globMatch("other/app", "acme/*") {
		t.Fatal("argoGlob: acme/* must match acme/app only")
	}
}
