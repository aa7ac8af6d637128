// Command requestpath reads a `dlv trace` of TestRequestPath (stdin) and
// reports, for each window between stdiobridge.PathMark("<x> begin") and
// PathMark("<x> end"), the functions and files of the module the request
// visited, and any file entered again further down a call chain that had
// left it (A → B → A). Packages other than those given by -deep count as
// one leaf call each (their insides are not the request's path).
//
//	dlv trace --test ./stdiobridge/ '<regexp>' -- -test.run '^TestRequestPath$' 2> trace.txt
//	go run ./.ci/requestpath -root . < trace.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

const module = "github.com/caddymcp/caddymcp/"

var (
	root = flag.String("root", ".", "the module's root directory")
	deep = flag.String("deep", "stdiobridge,internal/childproc", "packages whose functions are listed one by one")
)

// index maps dlv's function names (pkg.Func, pkg.(*T).M, pkg.T.M) to files.
func index(dirs []string) map[string]string {
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		pkgs, err := parser.ParseDir(fset, filepath.Join(*root, dir), func(fi os.FileInfo) bool { return true }, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, p := range pkgs {
			for path, f := range p.Files {
				for _, d := range f.Decls {
					fd, ok := d.(*ast.FuncDecl)
					if !ok {
						continue
					}
					name := fd.Name.Name
					if fd.Recv != nil && len(fd.Recv.List) > 0 {
						switch t := fd.Recv.List[0].Type.(type) {
						case *ast.StarExpr:
							name = "(*" + ident(t.X) + ")." + name
						default:
							name = ident(t) + "." + name
						}
					}
					out[module+dir+"."+name] = filepath.Join(dir, filepath.Base(path))
				}
			}
		}
	}
	return out
}

func ident(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name
	case *ast.IndexExpr:
		return ident(t.X)
	case *ast.IndexListExpr:
		return ident(t.X)
	}
	return "?"
}

var (
	callRe       = regexp.MustCompile(`^> goroutine\((\d+)\): ((?:[^\s(]|\(\*[^)]*\))+)\(`)
	retRe        = regexp.MustCompile(`^>> goroutine\((\d+)\): (\S+) =>`)
	closureRe    = regexp.MustCompile(`(\.(func|deferwrap|gowrap)\d+)+$`)
	closureDefer = regexp.MustCompile(`(\.(deferwrap|gowrap)\d+)+$`)
	markRe       = regexp.MustCompile(`stdiobridge\.PathMark\("([^"]+) (begin|end)"\)`)
)

// base is a function's name with its closures folded into it.
func base(fn string) string { return closureRe.ReplaceAllString(fn, "") }

type frame struct{ raw, fn, file string }

type window struct {
	name    string
	calls   int
	funcs   map[string]int
	files   map[string]int
	order   []string // functions in the order first entered
	reenter map[string]bool
}

func main() {
	flag.Parse()
	deepPkgs := strings.Split(*deep, ",")
	files := index(deepPkgs)
	pkgOf := func(fn string) string {
		rest := strings.TrimPrefix(fn, module)
		if i := strings.Index(rest, "."); i >= 0 {
			return rest[:i]
		}
		return rest
	}
	isDeep := func(pkg string) bool {
		for _, d := range deepPkgs {
			if pkg == d {
				return true
			}
		}
		return false
	}
	stacks := map[string][]frame{} // by goroutine
	var cur *window
	var done []*window
	stale := map[string]bool{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := markRe.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, "> ") {
			if m[2] == "begin" {
				cur = &window{name: m[1], funcs: map[string]int{}, files: map[string]int{}, reenter: map[string]bool{}}
				// a request handler still running from before the window
				// (a warm-up call's deferred work) is not this request's
				stale = map[string]bool{}
				for g, st := range stacks {
					for _, fr := range st {
						if strings.Contains(fr.fn, "ServeHTTP") || strings.Contains(fr.fn, "Server.serve") {
							stale[g] = true
						}
					}
				}
			} else if cur != nil {
				done = append(done, cur)
				cur = nil
			}
			continue
		}
		if m := retRe.FindStringSubmatch(line); m != nil {
			// pop down to the frame that returns; dlv reports a function
			// with deferred calls returning twice (before and after them):
			// a return with no frame of its own is ignored
			st := stacks[m[1]]
			for i := len(st) - 1; i >= 0; i-- {
				if st[i].raw == m[2] {
					stacks[m[1]] = st[:i]
					break
				}
			}
			continue
		}
		m := callRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		g, fn := m[1], m[2]
		if strings.HasSuffix(fn, "-fm") {
			continue // a method value's wrapper: dlv reports no return for it
		}
		if strings.HasPrefix(strings.TrimPrefix(fn, module), "type:") {
			continue // compiler-generated (type equality)
		}
		pkg := pkgOf(fn)
		f := frame{raw: fn, fn: fn}
		if isDeep(pkg) {
			f.fn = strings.TrimSuffix(closureDefer.ReplaceAllString(fn, ""), "-fm") // deferred and method-value wrappers fold into their function
			f.file = files[base(f.fn)]
			if f.file == "" {
				f.file = pkg + "/?"
			}
		} else {
			f.fn, f.file = pkg+" (leaf)", pkg
		}
		st := stacks[g]
		leafUnder := len(st) > 0 && strings.HasSuffix(st[len(st)-1].fn, "(leaf)")
		if leafUnder {
			// a callback a leaf package calls (jsonscan's walker) is part
			// of that leaf
			f = st[len(st)-1]
			f.raw = fn
		}
		stacks[g] = append(st, f)
		if len(st) == 0 {
			delete(stale, g)
		}
		if cur == nil || leafUnder || stale[g] || strings.HasSuffix(f.fn, "PathMark") || background(stacks[g]) {
			continue
		}
		if _, seen := cur.funcs[f.fn]; !seen {
			cur.order = append(cur.order, f.fn)
		}
		cur.calls++
		cur.funcs[f.fn]++
		cur.files[f.file]++
		// a file entered again below a frame of another file: A → B → A
		var chain, where []string
		for _, fr := range st {
			if len(chain) == 0 || chain[len(chain)-1] != fr.file {
				chain = append(chain, fr.file)
				where = append(where, fr.file+" ("+short(fr.fn)+")")
			}
		}
		if len(chain) > 0 && chain[len(chain)-1] != f.file && !leafUnder {
			for i, c := range chain[:len(chain)-1] {
				if c == f.file {
					cur.reenter[strings.Join(append(where[i:], f.file+" ("+short(f.fn)+")"), " → ")] = true
					break
				}
			}
		}
	}
	for _, w := range done {
		fmt.Printf("## %s tools/call\n\n", w.name)
		fmt.Printf("%d calls of %d functions in %d files (deferred and method-value wrappers folded into their function; %s as one leaf call each)\n\n",
			w.calls, len(w.funcs), len(w.files), "packages outside "+*deep)
		names := make([]string, 0, len(w.files))
		for f := range w.files {
			names = append(names, f)
		}
		sort.Strings(names)
		fmt.Printf("files: %s\n\n", strings.Join(names, ", "))
		fmt.Println("functions, in the order first entered:")
		for _, fn := range w.order {
			fmt.Printf("  %s (%s) ×%d\n", strings.TrimPrefix(fn, module), fileOf(files, base(fn)), w.funcs[fn])
		}
		if len(w.reenter) == 0 {
			fmt.Println("\nno file entered again down a call chain that had left it")
		} else {
			fmt.Println("\nfiles entered again down a call chain that had left them:")
			var rs []string
			for r := range w.reenter {
				rs = append(rs, r)
			}
			sort.Strings(rs)
			for _, r := range rs {
				fmt.Println("  " + r)
			}
		}
		fmt.Println()
	}
}

func fileOf(files map[string]string, fn string) string {
	if f := files[fn]; f != "" {
		return f
	}
	return "-"
}

// short is a function's name without its package path.
func short(fn string) string {
	fn = strings.TrimPrefix(fn, module)
	if i := strings.Index(fn, "."); i >= 0 && !strings.HasSuffix(fn, "(leaf)") {
		return fn[i+1:]
	}
	return fn
}

// background reports whether a goroutine's stack is the route's
// background work (the reaper of idle sessions and pool children), which
// is not the request's whenever it runs.
func background(st []frame) bool {
	for _, fr := range st {
		if strings.Contains(fr.fn, ".reap") {
			return true
		}
	}
	return false
}
