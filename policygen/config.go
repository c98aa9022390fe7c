package policygen

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/titanous/json5"
)

// Format is a kind of agent configuration file.
type Format string

const (
	OpenClaw      Format = "openclaw"       // openclaw.json (JSON5, $include)
	ClaudeCode    Format = "claude-code"    // ~/.claude.json, a repository's .mcp.json
	ClaudeDesktop Format = "claude-desktop" // claude_desktop_config.json
	Cursor        Format = "cursor"         // ~/.cursor/mcp.json, a repository's .cursor/mcp.json
	VSCode        Format = "vscode"         // a repository's .vscode/mcp.json
	Codex         Format = "codex"          // ~/.codex/config.toml
	Gemini        Format = "gemini"         // ~/.gemini/settings.json
)

// Options are what Read needs from its caller.
type Options struct {
	// ReadFile reads a file an OpenClaw $include names, by the path Read
	// gives it. Nil refuses includes.
	ReadFile func(name string) ([]byte, error)
	// Dir is the directory relative names are relative to (the caller's
	// working directory), and Home the user's home directory: an MCP file
	// in a directory of its own under Home (~/.cursor/mcp.json) is the
	// user's own, elsewhere (a repository's .cursor/mcp.json) a project's.
	Dir, Home string
}

// maxConfigBytes bounds a configuration file, includes too.
const maxConfigBytes = 4 << 20

// Read reads one agent configuration file, named name (as the user wrote
// it: it appears in every from: note), and says what network it needs.
// The format is told by the file's name and top-level keys.
func Read(name string, data []byte, opts Options) (*Result, error) {
	if len(data) > maxConfigBytes {
		return nil, &Error{File: name, Msg: fmt.Sprintf("larger than %d bytes", maxConfigBytes)}
	}
	sum := sha256.Sum256(data)
	r := &reader{name: name, data: data, opts: opts, res: &Result{Files: []string{clean(name)},
		Hashes: map[string]string{clean(name): hex.EncodeToString(sum[:])}}}
	base := filepath.Base(name)
	if strings.HasSuffix(base, ".toml") {
		top, err := decodeTOML(name, data)
		if err != nil {
			return nil, err
		}
		if err := r.codex(top); err != nil {
			return nil, err
		}
		return r.res, nil
	}
	top, err := decodeJSON5(name, data)
	if err != nil {
		return nil, err
	}
	f, ok := detect(name, top)
	if !ok {
		return nil, &Error{File: name, Line: 1, Msg: "not an agent configuration clawnet knows (want openclaw.json, .mcp.json, ~/.claude.json, claude_desktop_config.json, .cursor/mcp.json, .vscode/mcp.json, ~/.codex/config.toml or ~/.gemini/settings.json)"}
	}
	switch f {
	case OpenClaw:
		err = r.openclaw(top)
	case ClaudeCode:
		err = r.claudeCode(top)
	case VSCode:
		err = r.mcpServers(top, "servers", "", r.projectScope())
	case Gemini:
		err = r.gemini(top)
	default: // Claude Desktop, Cursor and files of their shape
		err = r.mcpServers(top, "mcpServers", "", f == Cursor && r.projectScope())
	}
	if err != nil {
		return nil, err
	}
	return r.res, nil
}

// detect tells a JSON file's format by its name, then its top-level keys.
func detect(name string, top map[string]any) (Format, bool) {
	base := filepath.Base(name)
	dir := filepath.Base(filepath.Dir(name))
	switch {
	case base == "openclaw.json" || strings.HasSuffix(base, ".json5"):
		return OpenClaw, true
	case base == ".claude.json" || base == ".mcp.json":
		return ClaudeCode, true
	case base == "claude_desktop_config.json":
		return ClaudeDesktop, true
	case base == "mcp.json" && dir == ".cursor":
		return Cursor, true
	case base == "mcp.json" && dir == ".vscode":
		return VSCode, true
	case base == "settings.json" && dir == ".gemini":
		return Gemini, true
	}
	has := func(k string) bool { _, ok := top[k]; return ok }
	switch {
	case has("$include") || has("agents") || has("channels") || has("gateway") || has("models") || has("mcp"):
		return OpenClaw, true
	case has("servers"):
		return VSCode, true
	case has("mcpServers") && base == "settings.json":
		return Gemini, true
	case has("mcpServers"):
		return Cursor, true
	}
	return "", false
}

// projectScope reports whether the file belongs to a repository rather
// than to the user: .mcp.json always; .cursor/ and .vscode/ files unless
// their directory sits directly in the home directory.
func (r *reader) projectScope() bool {
	base := filepath.Base(r.name)
	if base == ".mcp.json" {
		return true
	}
	if r.opts.Home == "" {
		return true // cannot tell: the careful answer
	}
	abs := r.name
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(r.opts.Dir, abs)
	}
	return filepath.Clean(filepath.Dir(filepath.Dir(abs))) != filepath.Clean(r.opts.Home)
}

func decodeJSON5(name string, data []byte) (map[string]any, error) {
	var v any
	if err := json5.Unmarshal(data, &v); err != nil {
		var se *json5.SyntaxError
		if errors.As(err, &se) {
			return nil, &Error{File: name, Line: lineAt(data, se.Offset), Msg: se.Error()}
		}
		return nil, &Error{File: name, Msg: "not JSON5: " + err.Error()}
	}
	top, ok := v.(map[string]any)
	if !ok {
		return nil, &Error{File: name, Line: 1, Msg: "want an object at the top"}
	}
	return top, nil
}

func decodeTOML(name string, data []byte) (map[string]any, error) {
	var top map[string]any
	if _, err := toml.Decode(string(data), &top); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Line: pe.Position.Line, Msg: pe.Message}
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	return top, nil
}

// reader reads one file (and its includes) into a Result.
type reader struct {
	name string
	data []byte
	opts Options
	res  *Result
}

// typeErr is a value of the wrong type at key path key.
func (r *reader) typeErr(key, want string) error {
	// The last named key: "a.args[1]" is about args.
	last := key
	for strings.HasSuffix(last, "]") && !strings.HasSuffix(last, `"]`) {
		last = last[:strings.LastIndex(last, "[")]
	}
	if i := strings.LastIndexAny(last, ".["); i >= 0 {
		last = strings.Trim(last[i:], `.[]"`)
	}
	return &Error{File: r.name, Line: lineOfKey(r.data, last), Msg: key + ": want " + want}
}

func (r *reader) need(n Need) {
	n.File, n.Key = clean(r.name), clean(n.Key)
	if n.Proto == "" {
		n.Proto = "tcp"
	}
	r.res.Needs = append(r.res.Needs, n)
}

func (r *reader) warn(key, msg string) {
	r.res.Warnings = appendNew(r.res.Warnings, clean(r.name+": "+key+": "+msg))
}

func (r *reader) note(key, msg string) {
	r.res.Notes = appendNew(r.res.Notes, clean(r.name+": "+key+": "+msg))
}

// clean makes s safe on one line of the generated file: a key or a
// package name with a line break or another control character in it is
// written escaped, so it can never start a rule of its own.
func clean(s string) string {
	for _, c := range s {
		// What YAML prints as is, less the line breaks it knows.
		ok := c >= 0x20 && c <= 0x7e || c >= 0xa0 && c <= 0xd7ff && c != utf8.RuneError ||
			c >= 0xe000 && c <= 0xfffd && c != utf8.RuneError || c >= 0x10000 && c <= 0x10ffff
		if !ok || c == 0x2028 || c == 0x2029 {
			q := strconv.QuoteToASCII(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

// Accessors for decoded JSON5 and TOML values. A missing key is the zero
// value; a present key of the wrong type is an error naming the key.

func (r *reader) obj(m map[string]any, key, path string) (map[string]any, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return nil, nil
	}
	o, ok := v.(map[string]any)
	if !ok {
		return nil, r.typeErr(path, "an object")
	}
	return o, nil
}

func (r *reader) str(m map[string]any, key, path string) (string, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", r.typeErr(path, "a string")
	}
	return s, nil
}

func (r *reader) list(m map[string]any, key, path string) ([]any, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, r.typeErr(path, "a list")
	}
	return l, nil
}

func (r *reader) strList(m map[string]any, key, path string) ([]string, error) {
	l, err := r.list(m, key, path)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(l))
	for i, v := range l {
		s, ok := v.(string)
		if !ok {
			return nil, r.typeErr(fmt.Sprintf("%s[%d]", path, i), "a string")
		}
		out = append(out, s)
	}
	return out, nil
}

// port reads a port number written as a number or a string.
func (r *reader) port(m map[string]any, key, path string) (uint16, bool, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return 0, false, nil
	}
	var n float64
	switch x := v.(type) {
	case float64:
		n = x
	case int64:
		n = float64(x)
	case string:
		p, err := strconv.ParseUint(x, 10, 16)
		if err != nil {
			return 0, false, r.typeErr(path, "a port, 1-65535")
		}
		n = float64(p)
	default:
		return 0, false, r.typeErr(path, "a port, 1-65535")
	}
	if n < 1 || n > 65535 || n != float64(int(n)) {
		return 0, false, r.typeErr(path, "a port, 1-65535")
	}
	return uint16(n), true, nil
}

// disabled reports whether an entry says it is off.
func disabled(m map[string]any) bool {
	if b, ok := m["enabled"].(bool); ok && !b {
		return true
	}
	b, ok := m["disabled"].(bool)
	return ok && b
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// keyPath appends key to path, quoted when it is not a plain word.
func keyPath(p, key string) string {
	plain := key != ""
	for i := 0; i < len(key); i++ {
		if c := key[i]; !isWordByte(c) || c == '$' {
			plain = false
		}
	}
	if !plain {
		return p + "[" + strconv.Quote(key) + "]"
	}
	if p == "" {
		return key
	}
	return p + "." + key
}

// includes resolves OpenClaw's $include: anywhere in the tree, a string or
// a list of strings naming files (relative to the including file, inside
// the top file's directory), deep-merged in order (objects merge, lists
// concatenate, other values: the later wins), then the object's other keys
// merged over them. At most maxIncludeDepth deep; a cycle is an error.
const maxIncludeDepth = 10

type includer struct {
	r     *reader
	root  string // the top file's directory, for the containment check
	chain []string
}

func (in *includer) resolve(v any, file string, data []byte) (any, error) {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			var err error
			if out[i], err = in.resolve(e, file, data); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[string]any:
		inc, has := x["$include"]
		rest := map[string]any{}
		for _, k := range sortedKeys(x) {
			if k == "$include" {
				continue
			}
			e, err := in.resolve(x[k], file, data)
			if err != nil {
				return nil, err
			}
			rest[k] = e
		}
		if !has {
			return rest, nil
		}
		var names []string
		switch y := inc.(type) {
		case string:
			names = []string{y}
		case []any:
			for _, e := range y {
				s, ok := e.(string)
				if !ok {
					return nil, &Error{File: file, Line: lineOfKey(data, "$include"), Msg: "$include: want a file name or a list of file names"}
				}
				names = append(names, s)
			}
		default:
			return nil, &Error{File: file, Line: lineOfKey(data, "$include"), Msg: "$include: want a file name or a list of file names"}
		}
		var merged any
		for i, n := range names {
			got, err := in.load(n, file, data)
			if err != nil {
				return nil, err
			}
			if i == 0 {
				merged = got
			} else {
				merged = deepMerge(merged, got)
			}
		}
		if len(rest) == 0 {
			return merged, nil
		}
		if _, ok := merged.(map[string]any); !ok {
			return nil, &Error{File: file, Line: lineOfKey(data, "$include"), Msg: "$include: keys beside it need the included file to hold an object"}
		}
		return deepMerge(merged, rest), nil
	}
	return v, nil
}

func (in *includer) load(inc, from string, fromData []byte) (any, error) {
	line := lineOfKey(fromData, "$include")
	fail := func(msg string) error {
		return &Error{File: from, Line: line, Msg: "$include " + strconv.Quote(inc) + ": " + msg}
	}
	if in.r.opts.ReadFile == nil {
		return nil, fail("includes are not read here")
	}
	if len(in.chain) > maxIncludeDepth {
		return nil, fail(fmt.Sprintf("more than %d includes deep", maxIncludeDepth))
	}
	name := inc
	if !filepath.IsAbs(name) {
		name = filepath.Join(filepath.Dir(from), inc)
	}
	name = filepath.Clean(name)
	rel, err := filepath.Rel(in.root, in.abs(name))
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, fail("outside the directory of " + in.r.name)
	}
	if slices.Contains(in.chain, in.abs(name)) {
		return nil, fail("includes itself (" + strings.Join(append(slices.Clone(in.chain), in.abs(name)), " -> ") + ")")
	}
	data, err := in.r.opts.ReadFile(in.abs(name))
	if err != nil {
		return nil, fail("cannot read it: " + errText(err))
	}
	if len(data) > maxConfigBytes {
		return nil, &Error{File: name, Msg: fmt.Sprintf("larger than %d bytes", maxConfigBytes)}
	}
	var v any
	if err := json5.Unmarshal(data, &v); err != nil {
		var se *json5.SyntaxError
		if errors.As(err, &se) {
			return nil, &Error{File: name, Line: lineAt(data, se.Offset), Msg: se.Error()}
		}
		return nil, &Error{File: name, Msg: "not JSON5: " + err.Error()}
	}
	in.r.res.Files = append(in.r.res.Files, clean(name))
	in.chain = append(in.chain, in.abs(name))
	defer func() { in.chain = in.chain[:len(in.chain)-1] }()
	return in.resolve(v, name, data)
}

func (in *includer) abs(name string) string {
	if filepath.IsAbs(name) || in.r.opts.Dir == "" {
		return filepath.Clean(name)
	}
	return filepath.Join(in.r.opts.Dir, name)
}

// errText is a read error without the path it repeats.
func errText(err error) string {
	var pe interface{ Unwrap() error }
	if errors.As(err, &pe) && pe.Unwrap() != nil {
		return pe.Unwrap().Error()
	}
	return err.Error()
}

// deepMerge merges b over a: objects key by key, lists one after the
// other, any other value b's.
func deepMerge(a, b any) any {
	if la, ok := a.([]any); ok {
		if lb, ok := b.([]any); ok {
			return append(slices.Clone(la), lb...)
		}
	}
	ma, okA := a.(map[string]any)
	mb, okB := b.(map[string]any)
	if !okA || !okB {
		return b
	}
	out := make(map[string]any, len(ma)+len(mb))
	for k, v := range ma {
		out[k] = v
	}
	for k, v := range mb {
		if old, ok := out[k]; ok {
			out[k] = deepMerge(old, v)
		} else {
			out[k] = v
		}
	}
	return out
}

// cmdBase is a command's name without its directory and a Windows suffix.
func cmdBase(cmd string) string {
	b := path.Base(strings.ReplaceAll(cmd, `\`, "/"))
	for _, ext := range []string{".exe", ".cmd", ".bat"} {
		b = strings.TrimSuffix(b, ext)
	}
	return b
}
