package policygen

import (
	"fmt"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/policy"
)

// checkHosts: every host of the catalog is a name a rule can carry, not
// an address, and not the agent's own loopback.
func checkHosts(t *testing.T, hosts []string) {
	t.Helper()
	for _, h := range hosts {
		if _, err := policy.ParsePattern(h); err != nil {
			t.Errorf("host %q: %v", h, err)
		}
		if k := classifyHost(strings.TrimPrefix(h, "*.")); k != hostName {
			t.Errorf("host %q is not a plain name (kind %d)", h, k)
		}
	}
}

// needsOf reads config as path and returns its needs, notes and warnings
// in one list of lines.
func needsOf(t *testing.T, path, config string) []string {
	t.Helper()
	r, err := Read(path, []byte(config), Options{})
	if err != nil {
		t.Fatalf("Read(%s) = %v", config, err)
	}
	var out []string
	for _, n := range r.Needs {
		out = append(out, needString(n))
	}
	for _, u := range r.Unknown {
		out = append(out, "unknown "+u.What)
	}
	for _, s := range r.Notes {
		out = append(out, "note "+s)
	}
	for _, s := range r.Warnings {
		out = append(out, "warn "+s)
	}
	return out
}

func hasLine(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestCatalogProviders: each provider entry, used in a model reference.
func TestCatalogProviders(t *testing.T) {
	for id, p := range providers {
		t.Run(id, func(t *testing.T) {
			got := needsOf(t, "openclaw.json", fmt.Sprintf(`{agents: {defaults: {model: "%s/some-model"}}, gateway: {mode: "remote"}}`, id))
			switch {
			case p.Preset != "":
				pr, ok := policy.LookupPreset(p.Preset)
				if !ok || !pr.LLM {
					t.Fatalf("preset %q is not an LLM preset clawnet ships", p.Preset)
				}
				if !hasLine(got, "out preset:"+p.Preset+" <- agents.defaults.model") {
					t.Errorf("got %q, want preset %s", got, p.Preset)
				}
			case p.Local:
				if !hasLine(got, "note openclaw.json: agents.defaults.model") {
					t.Errorf("got %q, want a note that it is on the agent's loopback", got)
				}
			default:
				if p.Why == "" || !hasLine(got, "warn openclaw.json: agents.defaults.model ("+id+"/some-model): "+p.Why) {
					t.Errorf("got %q, want a warning saying why", got)
				}
			}
			checkHosts(t, p.Hosts)
		})
	}
	got := needsOf(t, "openclaw.json", `{agents: {defaults: {model: "nosuch/m"}}, gateway: {mode: "remote"}}`)
	if !hasLine(got, `warn openclaw.json: agents.defaults.model (nosuch/m): unknown LLM provider "nosuch"`) {
		t.Errorf("an unknown provider: got %q, want a warning naming the key", got)
	}
}

// TestCatalogChannels: each channel entry, configured with its defaults.
func TestCatalogChannels(t *testing.T) {
	want := map[string][]string{
		"telegram":   {"out api.telegram.org:443 <- channels.telegram (long polling)"},
		"slack":      {"out slack.com,files.slack.com,wss-primary.slack.com,wss-backup.slack.com:443 <- channels.slack (socket mode)"},
		"discord":    {"out discord.com,gateway.discord.gg,cdn.discordapp.com:443 <- channels.discord", "out *.discord.gg,media.discordapp.net:443 unverified <- channels.discord"},
		"whatsapp":   {"out web.whatsapp.com:443 <- channels.whatsapp", "out mmg.whatsapp.net:443 unverified <- channels.whatsapp"},
		"signal":     {"out chat.signal.org:443 <- channels.signal", "out storage.signal.org,cdn.signal.org,cdn2.signal.org,cdn3.signal.org,cdsi.signal.org,svr2.signal.org:443 unverified <- channels.signal"},
		"matrix":     {"warn openclaw.json: channels.matrix: no homeserver set"},
		"mattermost": {"warn openclaw.json: channels.mattermost: no baseUrl set"},
		"googlechat": {"out chat.googleapis.com,oauth2.googleapis.com:443 unverified <- channels.googlechat", "in :18789 <- channels.googlechat"},
		"irc":        {"warn openclaw.json: channels.irc: no host set"},
		"imessage":   {"note openclaw.json: channels.imessage: imsg runs on a Mac"},
		"msteams":    {"warn openclaw.json: channels.msteams: Microsoft Teams' endpoints are not in the catalog"},
	}
	for _, name := range channelKinds {
		t.Run(name, func(t *testing.T) {
			got := needsOf(t, "openclaw.json", `{channels: {`+name+`: {}}, gateway: {mode: "remote"}}`)
			if len(want[name]) == 0 {
				t.Fatalf("no expectation for channel %s", name)
			}
			for _, w := range want[name] {
				if !hasLine(got, w) {
					t.Errorf("got %q, want a line starting %q", got, w)
				}
			}
		})
	}
	for name, e := range channels {
		checkHosts(t, append(e.Hosts, e.Unverified...))
		if _, ok := want[strings.TrimSuffix(name, "-wss")]; !ok {
			t.Errorf("catalog channel %s has no test", name)
		}
	}
	// Discord voice is said to be out of reach, not silently dropped.
	got := needsOf(t, "openclaw.json", `{channels: {discord: {voice: {enabled: true}}}, gateway: {mode: "remote"}}`)
	if !hasLine(got, "warn openclaw.json: channels.discord.voice: Discord voice sends UDP") {
		t.Errorf("discord voice: got %q, want a warning", got)
	}
}

// TestCatalogServers: each well-known MCP server, run by the launcher its
// kind of package uses.
func TestCatalogServers(t *testing.T) {
	for pkg, s := range servers {
		t.Run(pkg, func(t *testing.T) {
			cmd, args := "npx", `"-y", "`+pkg+`"`
			switch {
			case strings.HasPrefix(pkg, "ghcr.io/"):
				cmd, args = "docker", `"run", "-i", "--rm", "`+pkg+`:latest"`
			case strings.HasPrefix(pkg, "mcp-server-"):
				cmd, args = "uvx", `"`+pkg+`"`
			}
			extra := ""
			if s.Remote {
				extra = `, "https://remote.example.com/sse"`
			}
			if s.DSN != 0 {
				extra = `, "postgresql://u@db.example.com/app"`
			}
			got := needsOf(t, "claude_desktop_config.json", `{"mcpServers": {"s": {"command": "`+cmd+`", "args": [`+args+extra+`]}}}`)
			if !hasLine(got, "setup out ") {
				t.Errorf("got %q, want a setup need for the launcher", got)
			}
			switch {
			case s.Local:
				if !hasLine(got, "note claude_desktop_config.json: mcpServers.s: "+pkg+" works on local files") {
					t.Errorf("got %q, want a note that it needs no network", got)
				}
			case s.OpenWeb:
				if !hasLine(got, "warn claude_desktop_config.json: mcpServers.s: "+pkg+" fetches whatever") {
					t.Errorf("got %q, want a warning", got)
				}
			case s.Remote:
				if !hasLine(got, "out remote.example.com:443 <- mcpServers.s.args (mcp-remote URL)") {
					t.Errorf("got %q, want the remote URL's host", got)
				}
			case s.DSN != 0:
				if !hasLine(got, fmt.Sprintf("out db.example.com:%d <- mcpServers.s.args (database URL)", s.DSN)) {
					t.Errorf("got %q, want the database host", got)
				}
			default:
				w := "out " + strings.Join(s.Hosts, ",") + ":443"
				if s.Unverified {
					w += " unverified"
				}
				if !hasLine(got, w+" <- mcpServers.s ("+pkg+")") {
					t.Errorf("got %q, want %q", got, w)
				}
			}
			checkHosts(t, s.Hosts)
		})
	}
}

// TestCatalogLaunchers: each launcher's download need, and the package it
// finds among the flags.
func TestCatalogLaunchers(t *testing.T) {
	tests := []struct {
		cmd, args, want string
	}{
		{"npx", `"-y", "--package", "@modelcontextprotocol/server-github@1.0", "mcp-server-github"`, "setup out preset:npm <- mcpServers.s (npx downloads @modelcontextprotocol/server-github@1.0)"},
		{"bunx", `"some-mcp"`, "setup out preset:npm <- mcpServers.s (bunx downloads some-mcp)"},
		{"pnpx", `"some-mcp"`, "setup out preset:npm <- mcpServers.s (pnpx downloads some-mcp)"},
		{"npm", `"exec", "--yes", "some-mcp"`, "setup out preset:npm <- mcpServers.s (npx downloads some-mcp)"},
		{"/usr/local/bin/uvx", `"--python", "3.12", "mcp-server-git"`, "setup out preset:pypi <- mcpServers.s (uvx downloads mcp-server-git)"},
		{"uv", `"tool", "run", "mcp-server-git"`, "setup out preset:pypi <- mcpServers.s (uvx downloads mcp-server-git)"},
		{"pipx", `"run", "mcp-server-git"`, "setup out preset:pypi <- mcpServers.s (uvx downloads mcp-server-git)"},
		{"docker", `"run", "-i", "--rm", "-e", "TOKEN", "mcp/github"`, "setup out preset:docker-hub <- mcpServers.s (docker pulls mcp/github)"},
		{"podman", `"run", "--env=A=b", "quay.io/acme/mcp:1"`, "setup out quay.io:443 <- mcpServers.s (docker pulls quay.io/acme/mcp)"},
		{"docker", `"run", "ghcr.io/acme/mcp@sha256:abc"`, "setup out ghcr.io:443 <- mcpServers.s (docker pulls ghcr.io/acme/mcp)"},
	}
	for _, tt := range tests {
		got := needsOf(t, "claude_desktop_config.json", `{"mcpServers": {"s": {"command": "`+tt.cmd+`", "args": [`+tt.args+`]}}}`)
		if !hasLine(got, tt.want) {
			t.Errorf("%s %s: got %q, want %q", tt.cmd, tt.args, got, tt.want)
		}
	}
	for name, l := range launchers {
		if l.Preset == "" {
			continue
		}
		if _, ok := policy.LookupPreset(l.Preset); !ok {
			t.Errorf("launcher %s: preset %q is not shipped", name, l.Preset)
		}
	}
	for name, e := range registries {
		checkHosts(t, append(append([]string{name}, e.Hosts...), e.Unverified...))
	}
}
