// Package caddyfiledoc checks that a module's Caddyfile syntax is written
// down as its parser reads it. The one copy of the syntax is the doc comment
// above the module's UnmarshalCaddyfile (Caddy's convention); the README's
// syntax block for the directive must list the same options.
package caddyfiledoc

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Check fails t naming every option that the parser in caddyfileGo reads
// and the syntax above its UnmarshalCaddyfile does not list, or the other
// way round, and likewise for the README's syntax block(s) of the directive
// (skipped when readme is ""). directive is what opens the syntax block
// ("mcp_stdio", "lb_policy mcp").
//
// The parser's options are the string labels of the case clauses of a
// switch over the option token: a switch that is a statement of the body of
// a `for d.NextBlock(...)` loop and whose tag is d.Val(), or a variable set
// from d.Val() in that body or in the switch's init. That loop may be in
// UnmarshalCaddyfile or in a function of the same file that it calls
// (directly or through others). Switches nested in a case (over the option
// again, or over a value: auto|legacy|modern) are not counted.
//
// The documented options are the first word of each line inside a block of
// the syntax (at any depth: a line that ends in "{" opens a nested block).
// The syntax is the comment's indented (code) lines; a line at depth 0
// starts a block and must start with directive. The README's syntax blocks
// are its ```caddyfile fences whose first line is one of those opening lines.
func Check(t testing.TB, caddyfileGo, readme, directive string) {
	t.Helper()
	problems, err := Diff(caddyfileGo, readme, directive)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// Diff is Check's comparison: one line per disagreement.
func Diff(caddyfileGo, readme, directive string) ([]string, error) {
	parsed, doc, err := fromGo(caddyfileGo)
	if err != nil {
		return nil, err
	}
	if len(parsed) == 0 {
		return nil, fmt.Errorf("%s: no case labels found in a switch over the option token of UnmarshalCaddyfile", caddyfileGo)
	}
	headers, documented, err := syntax(doc, directive)
	if err != nil {
		return nil, fmt.Errorf("%s: doc comment of UnmarshalCaddyfile: %v", caddyfileGo, err)
	}
	problems := compare(parsed, documented, "the parser of "+caddyfileGo, "the syntax above UnmarshalCaddyfile")
	if readme == "" {
		return problems, nil
	}
	inReadme, found, err := readmeOptions(readme, directive, headers)
	if err != nil {
		return nil, err
	}
	if !found {
		return append(problems, fmt.Sprintf("%s: no ```caddyfile syntax block opening with one of %q", readme, headers)), nil
	}
	return append(problems, compare(parsed, inReadme, "the parser of "+caddyfileGo, readme+"'s syntax block for "+directive)...), nil
}

func compare(parsed, documented map[string]bool, parsedIn, documentedIn string) []string {
	var problems []string
	for _, o := range sorted(parsed) {
		if !documented[o] {
			problems = append(problems, fmt.Sprintf("option %s: read by %s, missing from %s", o, parsedIn, documentedIn))
		}
	}
	for _, o := range sorted(documented) {
		if !parsed[o] {
			problems = append(problems, fmt.Sprintf("option %s: in %s, not read by %s", o, documentedIn, parsedIn))
		}
	}
	return problems
}

func sorted(set map[string]bool) []string {
	var s []string
	for k := range set {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// fromGo returns the options the parser reads and the doc comment of
// UnmarshalCaddyfile.
func fromGo(path string) (map[string]bool, string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
	if err != nil {
		return nil, "", err
	}
	funcs := map[string]*ast.FuncDecl{}
	for _, decl := range f.Decls {
		if fd, ok := decl.(*ast.FuncDecl); ok && fd.Body != nil {
			funcs[fd.Name.Name] = fd
		}
	}
	top := funcs["UnmarshalCaddyfile"]
	if top == nil {
		return nil, "", fmt.Errorf("%s: no UnmarshalCaddyfile", path)
	}
	if top.Doc == nil {
		return nil, "", fmt.Errorf("%s: UnmarshalCaddyfile has no doc comment", path)
	}
	options := map[string]bool{}
	visited := map[string]bool{}
	var visit func(fd *ast.FuncDecl)
	visit = func(fd *ast.FuncDecl) {
		if visited[fd.Name.Name] {
			return
		}
		visited[fd.Name.Name] = true
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ForStmt:
				if isNextBlock(n.Cond) {
					optionCases(n.Body, options)
				}
			case *ast.CallExpr:
				if callee := funcs[calleeName(n.Fun)]; callee != nil {
					visit(callee)
				}
			}
			return true
		})
	}
	visit(top)
	return options, top.Doc.Text(), nil
}

func calleeName(fun ast.Expr) string {
	switch fun := fun.(type) {
	case *ast.Ident:
		return fun.Name
	case *ast.SelectorExpr:
		return fun.Sel.Name
	}
	return ""
}

// isNextBlock reports whether e is a call x.NextBlock(...).
func isNextBlock(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	return ok && calleeName(call.Fun) == "NextBlock"
}

// isVal reports whether e is a call x.Val().
func isVal(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 0 {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Val"
}

// valVars adds to vars the names that s sets from x.Val().
func valVars(s ast.Stmt, vars map[string]bool) {
	as, ok := s.(*ast.AssignStmt)
	if !ok || len(as.Lhs) != len(as.Rhs) {
		return
	}
	for i, rhs := range as.Rhs {
		if id, ok := as.Lhs[i].(*ast.Ident); ok && isVal(rhs) {
			vars[id.Name] = true
		}
	}
}

// optionCases adds the case labels of the switches over the option token
// that are statements of body.
func optionCases(body *ast.BlockStmt, options map[string]bool) {
	vars := map[string]bool{}
	for _, s := range body.List {
		valVars(s, vars)
		sw, ok := s.(*ast.SwitchStmt)
		if !ok || sw.Tag == nil {
			continue
		}
		local := map[string]bool{}
		if sw.Init != nil {
			valVars(sw.Init, local)
		}
		id, isIdent := sw.Tag.(*ast.Ident)
		if !isVal(sw.Tag) && !(isIdent && (vars[id.Name] || local[id.Name])) {
			continue
		}
		for _, c := range sw.Body.List {
			for _, e := range c.(*ast.CaseClause).List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if v, err := strconv.Unquote(lit.Value); err == nil {
						options[v] = true
					}
				}
			}
		}
	}
}

// syntax reads the syntax blocks of a doc comment (its indented lines): the
// lines that open them and the options they list.
func syntax(doc, directive string) ([]string, map[string]bool, error) {
	var lines []string
	for _, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, "\t") {
			lines = append(lines, l)
		}
	}
	headers, options, err := blocks(lines, directive, nil)
	if err == nil && len(headers) == 0 {
		err = fmt.Errorf("no syntax block opening with %q", directive)
	}
	return headers, options, err
}

// blocks parses Caddyfile syntax lines: lines at depth 0 open a block and
// must start with directive (and, if headers is not nil, be one of them);
// the first word of a line inside a block is an option. A "#" starts a
// comment.
func blocks(lines []string, directive string, headers []string) ([]string, map[string]bool, error) {
	var opened []string
	options := map[string]bool{}
	depth := 0
	for _, raw := range lines {
		l := raw
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if depth == 0 {
			if l != directive+" {" && !strings.HasPrefix(l, directive+" ") {
				return nil, nil, fmt.Errorf("%q: a block that does not open with %s", l, directive)
			}
			if headers != nil && !slices.Contains(headers, l) {
				return nil, nil, fmt.Errorf("%q: opens no block of the syntax above UnmarshalCaddyfile (%q)", l, headers)
			}
			opened = append(opened, l)
			if strings.HasSuffix(l, "{") {
				depth++
			}
			continue
		}
		if l == "}" {
			depth--
			continue
		}
		options[strings.Fields(l)[0]] = true
		if strings.HasSuffix(l, "{") {
			depth++
		}
	}
	if depth != 0 {
		return nil, nil, fmt.Errorf("unbalanced braces in %q", lines)
	}
	return opened, options, nil
}

// readmeOptions reads the options of the README's ```caddyfile fences whose
// first line is one of headers.
func readmeOptions(path, directive string, headers []string) (map[string]bool, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	options := map[string]bool{}
	found := false
	var fence []string
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case !in && strings.TrimSpace(l) == "```caddyfile":
			in, fence = true, nil
		case in && strings.TrimSpace(l) == "```":
			in = false
			if len(fence) == 0 || !slices.Contains(headers, strings.TrimSpace(fence[0])) {
				continue
			}
			_, opts, err := blocks(fence, directive, headers)
			if err != nil {
				return nil, false, fmt.Errorf("%s:%d: %v", path, n, err)
			}
			found = true
			for o := range opts {
				options[o] = true
			}
		case in:
			fence = append(fence, l)
		}
	}
	return options, found, sc.Err()
}

// Repeat is a Caddyfile block and the error its parser must give: Err is a
// substring of it ("" for a block that must parse).
type Repeat struct{ Name, In, Err string }

// CheckRepeats parses each case's block with a fresh unmarshaler from
// fresh and checks the error it gives: the one argument helper's wording
// (cfargs, "<option>: set twice") for a repeated single-value option,
// none for options that accumulate.
func CheckRepeats(t *testing.T, fresh func() caddyfile.Unmarshaler, cases []Repeat) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			err := fresh().UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.In))
			if tc.Err == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.Err) {
				t.Fatalf("error %v, want one containing %q", err, tc.Err)
			}
		})
	}
}
