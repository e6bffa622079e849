// casbin-check answers Argo CD RBAC questions about a policy.csv with the
// real casbin library, the way Argo CD 2.4's API server asks them, so the
// installer's rendered policy is checked against Argo CD's semantics and
// not against our own reading of them.
//
// Usage: casbin-check -policy FILE [-default ROLE]
//
// Argo CD's built-in roles (role:readonly, role:admin) are loaded first, as
// Argo CD does.
//
// Each line on stdin is one question, as JSON:
//
//	{"sub": "alice", "groups": ["acme-dev"], "res": "applications", "act": "sync", "obj": "acme/app"}
//
// and each answer one line on stdout: {"allowed": true}. A policy that
// Argo CD would refuse to load is an error (exit 1) before any question.
package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	"github.com/gobwas/glob"
)

// The request, policy, role and effect definitions of Argo CD 2.4's RBAC
// model (its assets/model.conf), restated: a subject has a role through
// `g` lines (transitively), a permission is `p, subject, resource, action,
// object, allow|deny`, and a request is allowed when some matching line
// allows it and none denies it. Resource, action and object are matched by
// argoGlob below, which is what Argo CD registers as its matcher in glob
// mode (the default).
const argoModel = `
[request_definition]
r = sub, res, act, obj

[policy_definition]
p = sub, res, act, obj, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = g(r.sub, p.sub) && argoGlob(r.res, p.res) && argoGlob(r.act, p.act) && argoGlob(r.obj, p.obj)
`

// globMatch is Argo CD 2.4's glob semantics: the pattern compiled by
// github.com/gobwas/glob (v0.2.3, the version Argo CD 2.4 requires) with no
// separators, so `*` also matches `/` (`action/*` matches
// `action/apps/Deployment/restart`). casbin's own globMatch (doublestar)
// stops `*` at `/`, and keyMatch looks only up to the first `*`: neither is
// the same, so neither is used. A pattern that does not compile matches
// nothing, as in Argo CD.
func globMatch(text, pattern string) bool {
	g, err := glob.Compile(pattern)
	if err != nil {
		return false
	}
	return g.Match(text)
}

func argoGlob(args ...interface{}) (interface{}, error) {
	if len(args) != 2 {
		return false, fmt.Errorf("argoGlob takes 2 arguments, got %d", len(args))
	}
	text, ok1 := args[0].(string)
	pattern, ok2 := args[1].(string)
	return ok1 && ok2 && globMatch(text, pattern), nil
}

// builtinPolicy restates the roles Argo CD 2.4 always loads before the
// user's policy.csv (its built-in policy): role:readonly may get every kind
// of object, role:admin may also change them, and the local `admin` account
// is role:admin. A policy.default of role:readonly therefore opens every
// tenant's applications to anyone signed in.
func builtinPolicy() [][]string {
	var lines [][]string
	object := func(resource string) string {
		if resource == "applications" || resource == "logs" || resource == "exec" {
			return "*/*"
		}
		return "*"
	}
	for _, res := range []string{"applications", "certificates", "clusters", "repositories", "projects", "accounts", "gpgkeys", "logs"} {
		lines = append(lines, []string{"p", "role:readonly", res, "get", object(res), "allow"})
	}
	admin := map[string][]string{
		"applications": {"create", "update", "delete", "sync", "override", "action/*"},
		"certificates": {"create", "update", "delete"},
		"clusters":     {"create", "update", "delete"},
		"repositories": {"create", "update", "delete"},
		"projects":     {"create", "update", "delete"},
		"accounts":     {"update"},
		"gpgkeys":      {"create", "delete"},
		"exec":         {"create"},
	}
	for _, res := range []string{"applications", "certificates", "clusters", "repositories", "projects", "accounts", "gpgkeys", "exec"} {
		for _, act := range admin[res] {
			lines = append(lines, []string{"p", "role:admin", res, act, object(res), "allow"})
		}
	}
	return append(lines, []string{"g", "role:admin", "role:readonly"}, []string{"g", "admin", "role:admin"})
}

func addLine(e *casbin.Enforcer, fields []string) error {
	var err error
	if fields[0] == "p" {
		_, err = e.AddPolicy(toAny(fields[1:])...)
	} else {
		_, err = e.AddGroupingPolicy(toAny(fields[1:])...)
	}
	return err
}

// loadPolicy reads a policy.csv as Argo CD 2.4 does: one CSV record per
// line (quotes allowed, leading spaces trimmed), blank lines and `#`
// comments skipped, the first field naming the section (`p` or `g`).
// Stricter than Argo CD in one way: a `p` line must have all five fields
// and a `g` line two, since casbin would otherwise evaluate a short line
// with empty fields.
func loadPolicy(e *casbin.Enforcer, text string) error {
	for n, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := csv.NewReader(strings.NewReader(line))
		r.TrimLeadingSpace = true
		fields, err := r.Read()
		if err != nil {
			return fmt.Errorf("line %d: %v", n+1, err)
		}
		switch {
		case fields[0] == "p" && len(fields) == 6:
			if fields[5] != "allow" && fields[5] != "deny" {
				return fmt.Errorf("line %d: effect %q is neither allow nor deny", n+1, fields[5])
			}
			if _, err := e.AddPolicy(toAny(fields[1:])...); err != nil {
				return fmt.Errorf("line %d: %v", n+1, err)
			}
		case fields[0] == "g" && len(fields) == 3:
			if _, err := e.AddGroupingPolicy(toAny(fields[1:])...); err != nil {
				return fmt.Errorf("line %d: %v", n+1, err)
			}
		default:
			return fmt.Errorf("line %d: invalid RBAC policy line: %s", n+1, line)
		}
	}
	return nil
}

func toAny(s []string) []interface{} {
	out := make([]interface{}, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

type question struct {
	Sub    string   `json:"sub"`
	Groups []string `json:"groups"`
	Res    string   `json:"res"`
	Act    string   `json:"act"`
	Obj    string   `json:"obj"`
}

type checker struct {
	e           *casbin.Enforcer
	defaultRole string
}

func (c *checker) enforce(sub string, q question) (bool, error) {
	return c.e.Enforce(sub, q.Res, q.Act, q.Obj)
}

// allowed asks in the order Argo CD 2.4's API server does for a signed-in
// user (server/rbacpolicy EnforceClaims with util/rbac enforce): the
// default role (policy.default), then the subject itself, then each of the
// user's groups (the `groups` scope) that some `g` line names as its
// member.
func (c *checker) allowed(q question) (bool, error) {
	if c.defaultRole != "" {
		if ok, err := c.enforce(c.defaultRole, q); err != nil || ok {
			return ok, err
		}
	}
	if ok, err := c.enforce(q.Sub, q); err != nil || ok {
		return ok, err
	}
	grouping, err := c.e.GetGroupingPolicy()
	if err != nil {
		return false, err
	}
	for _, group := range q.Groups {
		for _, line := range grouping {
			if line[0] != group {
				continue
			}
			if ok, err := c.enforce(group, q); err != nil || ok {
				return ok, err
			}
			break
		}
	}
	return false, nil
}

func run() error {
	policyFile := flag.String("policy", "", "the policy.csv to check")
	defaultRole := flag.String("default", "", "policy.default of argocd-rbac-cm")
	flag.Parse()
	if *policyFile == "" {
		return fmt.Errorf("-policy is required")
	}
	text, err := os.ReadFile(*policyFile)
	if err != nil {
		return err
	}
	m, err := model.NewModelFromString(argoModel)
	if err != nil {
		return fmt.Errorf("the model: %v", err)
	}
	e, err := casbin.NewEnforcer(m)
	if err != nil {
		return err
	}
	e.AddFunction("argoGlob", argoGlob)
	for _, line := range builtinPolicy() {
		if err := addLine(e, line); err != nil {
			return fmt.Errorf("the built-in policy: %v", err)
		}
	}
	if err := loadPolicy(e, string(text)); err != nil {
		return fmt.Errorf("%s: %v", *policyFile, err)
	}
	c := &checker{e: e, defaultRole: *defaultRole}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) == "" {
			continue
		}
		var q question
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			return fmt.Errorf("question %q: %v", in.Text(), err)
		}
		ok, err := c.allowed(q)
		if err != nil {
			return fmt.Errorf("question %q: %v", in.Text(), err)
		}
		if err := out.Encode(map[string]bool{"allowed": ok}); err != nil {
			return err
		}
	}
	return in.Err()
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "casbin-check: %v\n", err)
		os.Exit(1)
	}
}
