package policygen

import (
	"fmt"
	"slices"
	"strings"
)

// Phase says when the agent needs a destination.
type Phase uint8

const (
	// Run: for as long as the agent runs.
	Run Phase = iota
	// Setup: only while it starts, such as the package downloads of an MCP
	// launcher (npx, uvx, docker run).
	Setup
)

// Need is one network need of an agent, with where it came from.
type Need struct {
	// Ingress: someone connects to the agent on Ports (the gateway host,
	// through a published port); otherwise the agent connects out.
	Ingress bool
	Phase   Phase
	// Preset names a clawnet preset that covers the need (LLM providers,
	// package registries); otherwise Hosts does.
	Preset string
	// Hosts are DNS names, "*.example.com" wildcards or literal addresses.
	Hosts []string
	Ports []uint16
	// Proto is "tcp" or "udp".
	Proto string
	// File and Key say where the need came from: "openclaw.json" and
	// "channels.slack (socket mode)". They never hold a value of the
	// configuration, only file names, key paths and catalog words.
	File, Key string
	// Pending marks a need read from a project-scope file (a repository's
	// .mcp.json, .cursor/mcp.json, .vscode/mcp.json): anyone who can commit
	// to the repository wrote it, so it applies only once approved.
	Pending bool
	// Unverified marks catalog entries whose hosts could not be checked
	// against the service's own documentation.
	Unverified bool
}

// From is where the need came from, as a rule's from: says it.
func (n Need) From() string { return n.File + ": " + n.Key }

// Unknown is a stdio MCP server the catalog does not know: its network
// needs cannot be told from its configuration.
type Unknown struct {
	File, Key string
	// What is the command's base name and, for a launcher, the package it
	// runs: never its other arguments, which may hold secrets.
	What    string
	Pending bool
}

// Result is what Read found in one or more configuration files.
type Result struct {
	// Files are the files read, includes too, in the order read.
	Files []string
	// Hashes are the hex sha256 of each file's content, by its name in
	// Files: a pending rule carries its file's, so that an approval is
	// kept only while the file stays as it was approved.
	Hashes map[string]string
	Needs  []Need
	// Unknown lists stdio MCP servers with no known network needs.
	Unknown []Unknown
	// Notes are things that need no rule, said once: a provider on the
	// agent's own loopback, an MCP server that only works locally.
	Notes []string
	// Warnings name keys that could not be mapped to a need: an unknown
	// channel or provider, a value that names no host.
	Warnings []string
}

// Merge puts several results into one, in order.
func Merge(rs ...*Result) *Result {
	out := &Result{}
	for _, r := range rs {
		if r == nil {
			continue
		}
		out.Files = append(out.Files, r.Files...)
		for f, h := range r.Hashes {
			if out.Hashes == nil {
				out.Hashes = map[string]string{}
			}
			out.Hashes[f] = h
		}
		out.Needs = append(out.Needs, r.Needs...)
		out.Unknown = append(out.Unknown, r.Unknown...)
		out.Notes = appendNew(out.Notes, r.Notes...)
		out.Warnings = appendNew(out.Warnings, r.Warnings...)
	}
	return out
}

func appendNew(list []string, items ...string) []string {
	for _, s := range items {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

// Error is a configuration file that cannot be read. It prints as
// "file:line: reason", or "file: reason" when no line is known.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// lineAt is the 1-based line of byte offset off in data.
func lineAt(data []byte, off int64) int {
	if off < 0 {
		return 0
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return 1 + strings.Count(string(data[:off]), "\n")
}

// lineOfKey is the line where key is first written as a key in data, quoted
// or bare, before ':' (JSON5) or '=' (TOML), or 0. It is a best effort for messages about a key's value: the
// JSON5 parser keeps no positions.
func lineOfKey(data []byte, key string) int {
	s := string(data)
	for _, pat := range []string{`"` + key + `"`, `'` + key + `'`, key} {
		from := 0
		for {
			i := strings.Index(s[from:], pat)
			if i < 0 {
				break
			}
			i += from
			rest := strings.TrimLeft(s[i+len(pat):], " \t")
			before := byte(' ')
			if i > 0 {
				before = s[i-1]
			}
			if (strings.HasPrefix(rest, ":") || strings.HasPrefix(rest, "=")) && !isWordByte(before) {
				return 1 + strings.Count(s[:i], "\n")
			}
			from = i + len(pat)
		}
	}
	return 0
}

func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
