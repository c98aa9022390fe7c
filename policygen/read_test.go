package policygen

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// needString is a need in one line for tables: "out api.github.com:443",
// "in :18789", "setup out preset:npm", with " pending" and " unverified"
// marks, then "<- KEY".
func needString(n Need) string {
	var b strings.Builder
	if n.Phase == Setup {
		b.WriteString("setup ")
	}
	ports := strings.Trim(strings.ReplaceAll(fmt.Sprint(n.Ports), " ", ","), "[]")
	switch {
	case n.Ingress:
		b.WriteString("in :" + ports)
	case n.Preset != "":
		b.WriteString("out preset:" + n.Preset)
	default:
		b.WriteString("out " + strings.Join(n.Hosts, ",") + ":" + ports)
	}
	if n.Proto != "tcp" {
		b.WriteString("/" + n.Proto)
	}
	if n.Pending {
		b.WriteString(" pending")
	}
	if n.Unverified {
		b.WriteString(" unverified")
	}
	b.WriteString(" <- " + n.Key)
	return b.String()
}

func readFixture(t *testing.T, path string, opts Options) *Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	r, err := Read(path, data, opts)
	if err != nil {
		t.Fatalf("Read(%s) = %v", path, err)
	}
	return r
}

func TestRead(t *testing.T) {
	home, _ := filepath.Abs("testdata/cursor/home")
	tests := []struct {
		file     string
		home     string
		needs    []string
		unknown  []string
		warnings []string
	}{
		{
			file: "testdata/claude-code/repo/.mcp.json", // project scope: all pending
			needs: []string{
				"out mcp.asana.com:443 pending <- mcpServers.asana.url",
				"setup out preset:npm pending <- mcpServers.github (npx downloads @modelcontextprotocol/server-github@2025.4.8)",
				"out api.github.com:443 pending <- mcpServers.github (@modelcontextprotocol/server-github)",
				"setup out preset:npm pending <- mcpServers.mystery (npx downloads totally-unknown-mcp)",
				"out mcp.sentry.dev:443 pending <- mcpServers.sentry.url",
			},
			unknown: []string{"mcpServers.mystery: npx totally-unknown-mcp pending"},
		},
		{
			file: "testdata/claude-code/home/.claude.json", // the user's own, and a project's local servers
			needs: []string{
				"out preset:anthropic <- Claude Code itself (its API)",
				"setup out preset:npm <- mcpServers.notion (npx downloads @notionhq/notion-mcp-server)",
				"out api.notion.com:443 <- mcpServers.notion (@notionhq/notion-mcp-server)",
				`setup out preset:npm <- projects["/home/dev/shop"].mcpServers.db (npx downloads @modelcontextprotocol/server-postgres)`,
				`out db.internal.example:6543 <- projects["/home/dev/shop"].mcpServers.db.args (database URL)`,
			},
		},
		{
			file: "testdata/claude-desktop/claude_desktop_config.json", // mcp-remote, docker, a disabled server
			needs: []string{
				"setup out preset:npm <- mcpServers.atlassian (npx downloads mcp-remote)",
				"out mcp.atlassian.com:443 <- mcpServers.atlassian.args (mcp-remote URL)",
				"setup out preset:pypi <- mcpServers.fetch (uvx downloads mcp-server-fetch)",
				"setup out preset:npm <- mcpServers.filesystem (npx downloads @modelcontextprotocol/server-filesystem)",
				"setup out ghcr.io:443 <- mcpServers.github (docker pulls ghcr.io/github/github-mcp-server)",
				"setup out pkg-containers.githubusercontent.com:443 unverified <- mcpServers.github (docker pulls ghcr.io/github/github-mcp-server), layers are served from pkg-containers.githubusercontent.com",
				"out api.github.com:443 <- mcpServers.github (ghcr.io/github/github-mcp-server)",
			},
			warnings: []string{
				"mcpServers.fetch: mcp-server-fetch fetches whatever it is asked to: no rule can list that; add rules for the sites it should reach",
			},
		},
		{
			file: "testdata/cursor/repo/.cursor/mcp.json", // a repository's: pending
			home: home,
			needs: []string{
				"setup out preset:npm pending <- mcpServers.brave (npx downloads @modelcontextprotocol/server-brave-search)",
				"out api.search.brave.com:443 pending <- mcpServers.brave (@modelcontextprotocol/server-brave-search)",
				"out context.example.dev:443 pending <- mcpServers.context.url",
			},
		},
		{
			file: filepath.Join(home, ".cursor/mcp.json"), // the user's global one: not pending
			home: home,
			needs: []string{
				"setup out preset:npm <- mcpServers.maps (npx downloads @modelcontextprotocol/server-google-maps)",
				"out maps.googleapis.com:443 <- mcpServers.maps (@modelcontextprotocol/server-google-maps)",
			},
		},
		{
			file: "testdata/vscode/.vscode/mcp.json", // servers, type, inputs
			needs: []string{
				"out docs.example.com:8443 pending <- servers.docs.url",
				"setup out preset:npm pending <- servers.gitlab (npx downloads @modelcontextprotocol/server-gitlab)",
				"out gitlab.com:443 pending <- servers.gitlab (@modelcontextprotocol/server-gitlab), GITLAB_API_URL in its env can point elsewhere",
			},
		},
		{
			file: "testdata/codex/config.toml",
			needs: []string{
				"out llm-proxy.example.com:443 <- model_providers.proxy.base_url",
				"out preset:openai <- model_provider",
				"out mcp.figma.com:443 <- mcp_servers.figma.url",
				"setup out preset:pypi <- mcp_servers.time (uvx downloads mcp-server-time==2025.1)",
			},
			unknown: []string{"mcp_servers.tool: my-mcp"},
		},
		{
			file: "testdata/gemini/.gemini/settings.json", // url is SSE, httpUrl streamable HTTP
			needs: []string{
				"out preset:gemini <- Gemini CLI itself (the Gemini API; a Google sign-in or Vertex AI needs rules of their own)",
				"out events.example.com:443 <- mcpServers.events.url",
				"out stream.example.com:443 <- mcpServers.stream.httpUrl",
			},
			unknown: []string{"mcpServers.py: python"},
		},
	}
	for _, tt := range tests {
		r := readFixture(t, tt.file, Options{Home: tt.home})
		var got, unknown, warnings []string
		for _, n := range r.Needs {
			got = append(got, needString(n))
		}
		for _, u := range r.Unknown {
			s := u.Key + ": " + u.What
			if u.Pending {
				s += " pending"
			}
			unknown = append(unknown, s)
		}
		for _, w := range r.Warnings {
			warnings = append(warnings, strings.TrimPrefix(w, tt.file+": "))
		}
		check := func(what string, got, want []string) {
			if !slices.Equal(got, want) {
				t.Errorf("Read(%s) %s:\n  %s\nwant:\n  %s", tt.file, what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		}
		check("needs", got, tt.needs)
		check("unknown", unknown, tt.unknown)
		check("warnings", warnings, tt.warnings)
	}
}
