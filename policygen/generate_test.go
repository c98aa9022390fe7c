package policygen

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// readAs reads path, naming it name (as a user would type it) with
// relative names resolved in dir.
func readAs(t *testing.T, dir, name string, opts Options) *Result {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	opts.Dir, opts.ReadFile = dir, os.ReadFile
	r, err := Read(name, data, opts)
	if err != nil {
		t.Fatalf("Read(%s) = %v", name, err)
	}
	return r
}

// TestReadOpenClaw: every model reference (fallbacks, the image model, the
// model catalog, per-agent and per-channel models), a custom provider's
// base URL, multi-account channels with overrides, webhook mode, an
// $include, MCP servers and the gateway's port.
func TestReadOpenClaw(t *testing.T) {
	r := readAs(t, "testdata/openclaw", "openclaw.json", Options{})
	var got []string
	for _, n := range r.Needs {
		got = append(got, needString(n))
	}
	want := []string{
		"out 10.20.0.5:4000 <- models.providers.local.baseUrl",
		"out preset:anthropic <- agents.defaults.model.primary (anthropic/claude-opus-4-6)",
		"out preset:openai <- agents.defaults.model.fallbacks[0] (openai/gpt-5.2)",
		"out preset:openrouter <- agents.defaults.model.fallbacks[1] (openrouter/deepseek/deepseek-r1)",
		"out preset:gemini <- agents.defaults.imageModel (google/gemini-3-pro-image)",
		`out preset:anthropic <- agents.defaults.models["anthropic/claude-sonnet-4-6"] (anthropic/claude-sonnet-4-6)`,
		"out preset:mistral <- channels.modelByChannel.discord.123456789012345678 (mistral/mistral-large)",
		"out discord.com,gateway.discord.gg,cdn.discordapp.com:443 <- channels.discord (gateway and REST)",
		"out *.discord.gg,media.discordapp.net:443 unverified <- channels.discord (gateway and REST)",
		"out proxy.example.net:7891 <- channels.matrix.accounts.alerts.proxy (homeserver)",
		"out matrix.example.org:443 <- channels.matrix.accounts.ops.homeserver (homeserver)",
		"out slack.com,files.slack.com,wss-primary.slack.com,wss-backup.slack.com:443 <- channels.slack (socket mode)",
		"in :8787 <- channels.telegram.accounts.alerts (webhook mode: webhookPort default 8787), Telegram posting to webhookUrl through a proxy on the host",
		"out api.telegram.org:443 <- channels.telegram.accounts.alerts (webhook mode)",
		"out api.telegram.org:443 <- channels.telegram.accounts.default (long polling)",
		"out web.whatsapp.com:443 <- channels.whatsapp (Baileys web socket)",
		"out mmg.whatsapp.net:443 unverified <- channels.whatsapp (Baileys web socket)",
		"setup out preset:npm <- mcp.servers.github (npx downloads @modelcontextprotocol/server-github)",
		"out api.github.com:443 <- mcp.servers.github (@modelcontextprotocol/server-github)",
		"out mcp.linear.app:443 <- mcp.servers.linear.url",
		"setup out preset:pypi <- mcp.servers.notes (uvx downloads mcp-server-time)",
		"in :18789 <- gateway.port: control UI, CLI and channel webhooks, from the host through a published port",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Read(openclaw.json) needs:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if want := []string{"openclaw.json", "channels.json5"}; !slices.Equal(r.Files, want) {
		t.Errorf("Read(openclaw.json) files = %v, want %v (the $include)", r.Files, want)
	}
	if len(r.Unknown) != 1 || r.Unknown[0].Key != "mcp.servers.custom" || r.Unknown[0].What != "node" {
		t.Errorf("Read(openclaw.json) unknown = %+v, want mcp.servers.custom: node", r.Unknown)
	}
	if want := "openclaw.json: channels.carrierpigeon: unknown channel"; len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], want) {
		t.Errorf("Read(openclaw.json) warnings = %q, want one starting %q", r.Warnings, want)
	}
}

// TestOpenClawModes: Slack in HTTP mode and Telegram with its own API
// root need inbound and other hosts; the gateway's default bind is noted.
func TestOpenClawModes(t *testing.T) {
	tests := []struct {
		config string
		want   []string
		notes  []string
	}{
		{`{channels: {slack: {mode: "http", botToken: "x", signingSecret: "y"}}, gateway: {mode: "remote"}}`,
			[]string{
				"out slack.com,files.slack.com:443 <- channels.slack (HTTP mode)",
				"in :18789 <- channels.slack (HTTP mode: Slack posts events to the gateway's port)",
			}, nil},
		{`{channels: {telegram: {apiRoot: "https://tg-api.example.com:8081", webhookUrl: "https://x.example/h", webhookPort: 9000}}, gateway: {mode: "remote"}}`,
			[]string{
				"in :9000 <- channels.telegram.webhookPort, Telegram posting to webhookUrl through a proxy on the host",
				"out tg-api.example.com:8081 <- channels.telegram.apiRoot (webhook mode)",
			}, nil},
		{`{channels: {telegram: {proxy: "socks5://localhost:9050"}, signal: {httpUrl: "http://signal-cli:8080"}}, gateway: {mode: "remote"}}`,
			[]string{"out signal-cli:8080 <- channels.signal.httpUrl (signal-cli daemon)"},
			[]string{"openclaw.json: channels.telegram.proxy: on the agent's own loopback (inside its namespace): no rule needed"}},
		{`{channels: {discord: {enabled: false}, irc: {host: "irc.libera.chat"}}, gateway: {port: 3000}}`,
			[]string{
				"out irc.libera.chat:6697 <- channels.irc.host",
				"in :3000 <- gateway.port: control UI, CLI and channel webhooks, from the host through a published port",
			},
			[]string{
				"openclaw.json: channels.discord: enabled: false, no rule written",
				"openclaw.json: gateway.bind: loopback (the default): a published port reaches the agent on its own interface, so the gateway must listen there too (bind: lan)",
			}},
		{`{gateway: {mode: "remote", remote: {url: "wss://gw.example.com:18789"}}}`,
			[]string{"out gw.example.com:18789 <- gateway.remote.url"}, nil},
	}
	for _, tt := range tests {
		r, err := Read("openclaw.json", []byte(tt.config), Options{})
		if err != nil {
			t.Errorf("Read(%s) = %v", tt.config, err)
			continue
		}
		var got []string
		for _, n := range r.Needs {
			got = append(got, needString(n))
		}
		if !slices.Equal(got, tt.want) || !slices.Equal(r.Notes, tt.notes) {
			t.Errorf("Read(%s) =\n  %s\n  notes %q\nwant:\n  %s\n  notes %q", tt.config, strings.Join(got, "\n  "), r.Notes, strings.Join(tt.want, "\n  "), tt.notes)
		}
	}
}

// TestGenerateGolden: the policy generated from an OpenClaw config, a
// repository's .mcp.json and Claude Desktop's config, byte for byte. It
// must pass policy.Parse and Compile: see TestGeneratedParses.
func TestGenerateGolden(t *testing.T) {
	r := Merge(
		readAs(t, "testdata/openclaw", "openclaw.json", Options{}),
		readAs(t, "testdata/claude-code/repo", ".mcp.json", Options{}),
		readAs(t, "testdata/claude-desktop", "claude_desktop_config.json", Options{}),
	)
	got := Generate(r, GenerateOptions{})
	golden := "testdata/golden/openclaw.yaml"
	if *update {
		os.MkdirAll(filepath.Dir(golden), 0o755)
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./policygen -run TestGenerateGolden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Generate differs from %s (go test ./policygen -run TestGenerateGolden -update, then review the diff):\n%s", golden, Diff(golden, want, "generated", got))
	}
	mustCompile(t, golden, got)
}

func mustCompile(t *testing.T, name string, data []byte) *policy.Policy {
	t.Helper()
	f, err := policy.Parse(name, data)
	if err != nil {
		t.Fatalf("generated policy refused: %v\n%s", err, data)
	}
	p, err := policy.Compile(f, policy.Options{})
	if err != nil {
		t.Fatalf("generated policy refused: %v\n%s", err, data)
	}
	return p
}

// allFixtures reads every fixture, each in the directory it lives in.
func allFixtures(t *testing.T) []*Result {
	var out []*Result
	for _, f := range []string{
		"testdata/openclaw/openclaw.json",
		"testdata/claude-code/repo/.mcp.json",
		"testdata/claude-code/home/.claude.json",
		"testdata/claude-desktop/claude_desktop_config.json",
		"testdata/cursor/repo/.cursor/mcp.json",
		"testdata/cursor/home/.cursor/mcp.json",
		"testdata/vscode/.vscode/mcp.json",
		"testdata/codex/config.toml",
		"testdata/gemini/.gemini/settings.json",
	} {
		out = append(out, readAs(t, filepath.Dir(f), filepath.Base(f), Options{}))
	}
	return out
}

// TestGeneratedParses: whatever the options, the output is a policy
// clawnet takes, and it does what the needs say.
func TestGeneratedParses(t *testing.T) {
	r := Merge(allFixtures(t)...)
	for _, o := range []GenerateOptions{{}, {Audit: true}, {ApproveProject: true, Name: "all"}} {
		out := Generate(r, o)
		p := mustCompile(t, "gen.yaml", out)
		if p.Audit() != o.Audit {
			t.Errorf("Generate(%+v): Audit() = %v", o, p.Audit())
		}
		// Allowed by a rule: under audit, Allowed() would be true of
		// every name as WouldDeny.
		allowed := func(host string, port uint16) bool {
			return policy.Explain(p, policy.ProtoTCP, host, port).Verdict == policy.Allow
		}
		if !allowed("api.telegram.org", 443) || !allowed("api.anthropic.com", 443) || allowed("evil.example", 443) {
			t.Errorf("Generate(%+v): telegram, anthropic allowed and evil.example denied? %v %v %v", o, allowed("api.telegram.org", 443), allowed("api.anthropic.com", 443), allowed("evil.example", 443))
		}
		// A setup need, approved from .mcp.json (npx there) or not: an
		// approved launcher need is a setup rule, never an egress one.
		if allowed("registry.npmjs.org", 443) {
			t.Errorf("Generate(%+v): registry.npmjs.org allowed in phase run", o)
		}
		if sp := policy.ForPhase(p, policy.PhaseSetup); sp == policy.Decider(p) || !sp.DecideName("registry.npmjs.org", policy.ProtoTCP, 443).Allowed() {
			t.Errorf("Generate(%+v): registry.npmjs.org not allowed in the setup phase", o)
		}
		if got := allowed("mcp.sentry.dev", 443); got != o.ApproveProject {
			t.Errorf("Generate(%+v): mcp.sentry.dev (from .mcp.json) allowed = %v, want %v (pending)", o, got, o.ApproveProject)
		}
		in := policy.ExplainInbound(p, policy.Inbound{Proto: policy.ProtoTCP, Port: 18789, Peer: policy.Peer{Kind: policy.PeerHost}})
		if !in.Allowed() {
			t.Errorf("Generate(%+v): the host may not reach the gateway port: %v", o, in)
		}
	}
}

// TestNoSecrets: nothing of a secret in any fixture (each is marked
// SECRET) reaches the policy, the notes, the warnings or the unknown list.
func TestNoSecrets(t *testing.T) {
	r := Merge(allFixtures(t)...)
	var all bytes.Buffer
	all.Write(Generate(r, GenerateOptions{ApproveProject: true}))
	for _, s := range append(r.Notes, r.Warnings...) {
		all.WriteString(s)
	}
	for _, u := range r.Unknown {
		all.WriteString(u.Key + u.What)
	}
	if i := bytes.Index(bytes.ToUpper(all.Bytes()), []byte("SECRET")); i >= 0 {
		lo := max(0, i-80)
		t.Errorf("a secret reached the output: ...%s...", all.Bytes()[lo:min(all.Len(), i+40)])
	}
	// A value in a malformed file is not echoed either.
	_, err := Read("c.json", []byte(`{"mcpServers": {"a": {"command": "npx", "args": "SECRET"}}}`), Options{})
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("Read(a bad file) = %v, want an error without the secret", err)
	}
	r2, _ := Read("c.json", []byte(`{"mcpServers": {"a": {"url": "https://user:SECRET@/x"}}}`), Options{})
	if r2 == nil || len(r2.Warnings) != 1 || strings.Contains(r2.Warnings[0], "SECRET") {
		t.Errorf("Read(a URL with no host) warnings = %q, want one without the secret", r2.Warnings)
	}
}

// TestNoInjection: a key or a package name with line breaks cannot write a
// rule of its own into the policy.
func TestNoInjection(t *testing.T) {
	evil := "x\n  - domains: [evil.example]\n    ports: [443]\n#"
	cfg := `{"mcpServers": {` + jsonString(evil) + `: {"url": "https://ok.example/mcp"}, "b": {"command": "npx", "args": ["-y", ` + jsonString(evil) + `]}}}`
	r, err := Read("mcp.json", []byte(cfg), Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := Generate(r, GenerateOptions{ApproveProject: true})
	p := mustCompile(t, "gen.yaml", out)
	if policy.Explain(p, policy.ProtoTCP, "evil.example", 443).Allowed() {
		t.Errorf("a key with line breaks opened evil.example:\n%s", out)
	}
	if !policy.Explain(p, policy.ProtoTCP, "ok.example", 443).Allowed() {
		t.Errorf("ok.example not allowed:\n%s", out)
	}
}

func jsonString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// TestReadBad: a file that cannot be read is refused with file:line:
// reason.
func TestReadBad(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"openclaw.json", "{\n  agents: {\n    defaults: { model: \"a/b\" },,\n  },\n}\n", "openclaw.json:3: invalid character ',' looking for beginning of object key"},
		{".mcp.json", "{\n  \"mcpServers\": [\n    {\"url\": \"https://x.example\"}\n  ]\n}\n", ".mcp.json:2: mcpServers: want an object"},
		{".mcp.json", "{\n  \"mcpServers\": {\n    \"a\": {\n      \"command\": \"npx\",\n      \"args\": [\"-y\", 7]\n    }\n  }\n}\n", ".mcp.json:5: mcpServers.a.args[1]: want a string"},
		{"openclaw.json", "{\n  gateway: {\n    port: 70000,\n  },\n}\n", "openclaw.json:3: gateway.port: want a port, 1-65535"},
		{"openclaw.json", "{\n  agents: { defaults: { model: { primary: 5 } } },\n}\n", "openclaw.json:2: agents.defaults.model.primary: want a string"},
		{"openclaw.json", "[1, 2]", "openclaw.json:1: want an object at the top"},
		{"notes.json", `{"hello": "world"}`, "notes.json:1: not an agent configuration clawnet knows (want openclaw.json, .mcp.json, ~/.claude.json, claude_desktop_config.json, .cursor/mcp.json, .vscode/mcp.json, ~/.codex/config.toml or ~/.gemini/settings.json)"},
		{"config.toml", "[mcp_servers.a]\ncommand = \"npx\"\nargs = [\"-y\",\n", "config.toml:3: unexpected EOF; expected value"},
		{"config.toml", "[mcp_servers.a]\ncommand = 5\n", "config.toml:2: mcp_servers.a.command: want a string"},
		{"openclaw.json", "{ $include: \"../outside.json5\" }", `openclaw.json:1: $include "../outside.json5": outside the directory of openclaw.json`},
		{"openclaw.json", "{\n  $include: 5,\n}", `openclaw.json:2: $include: want a file name or a list of file names`},
	}
	for _, tt := range tests {
		_, err := Read(tt.name, []byte(tt.data), Options{ReadFile: os.ReadFile, Dir: t.TempDir()})
		if err == nil || err.Error() != tt.want {
			t.Errorf("Read(%s, %q) = %v\n  want %s", tt.name, tt.data, err, tt.want)
		}
	}
}

// TestIncludes: nested includes merge as OpenClaw merges them (objects by
// key, lists one after the other, keys beside $include last); a cycle, a
// missing file and a broken included file are refused, the last at its own
// line.
func TestIncludes(t *testing.T) {
	files := map[string]string{
		"/cfg/openclaw.json":    `{ $include: ["./a.json5", "./b.json5"], agents: { defaults: { model: { fallbacks: ["groq/llama"] } } } }`,
		"/cfg/a.json5":          `{ agents: { defaults: { model: { primary: "anthropic/x", fallbacks: ["openai/y"] } } } }`,
		"/cfg/b.json5":          `{ $include: "./sub/c.json5" }`,
		"/cfg/sub/c.json5":      `{ agents: { defaults: { model: { fallbacks: ["deepseek/z"] } } } }`,
		"/cfg/loop.json":        `{ $include: "./loop2.json5" }`,
		"/cfg/loop2.json5":      `{ $include: "./loop.json" }`,
		"/cfg/missing.json":     `{ agents: { $include: "./nope.json5" } }`,
		"/cfg/broken.json":      `{ $include: "./broken.json5" }`,
		"/cfg/broken.json5":     "{\n  agents: {\n    defaults: ]\n}",
		"/cfg/scalar.json":      `{ $include: "./scalar.json5", x: 1 }`,
		"/cfg/scalar.json5":     `"just a string"`,
		"/cfg/other/openclaw.x": ``,
	}
	read := func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
	opts := Options{ReadFile: read, Dir: "/"}
	r, err := Read("/cfg/openclaw.json", []byte(files["/cfg/openclaw.json"]), opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range r.Needs {
		if n.Preset != "" {
			got = append(got, n.Preset+" <- "+n.Key)
		}
	}
	want := []string{
		"anthropic <- agents.defaults.model.primary (anthropic/x)",
		"openai <- agents.defaults.model.fallbacks[0] (openai/y)",
		"deepseek <- agents.defaults.model.fallbacks[1] (deepseek/z)",
		"groq <- agents.defaults.model.fallbacks[2] (groq/llama)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("merged includes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if want := []string{"/cfg/openclaw.json", "/cfg/a.json5", "/cfg/b.json5", "/cfg/sub/c.json5"}; !slices.Equal(r.Files, want) {
		t.Errorf("files = %v, want %v", r.Files, want)
	}
	for name, wantErr := range map[string]string{
		"/cfg/loop.json":    `/cfg/loop2.json5:1: $include "./loop.json": includes itself (/cfg/loop.json -> /cfg/loop2.json5 -> /cfg/loop.json)`,
		"/cfg/missing.json": `/cfg/missing.json:1: $include "./nope.json5": cannot read it: file does not exist`,
		"/cfg/broken.json":  `/cfg/broken.json5:3: invalid character ']' looking for beginning of value`,
		"/cfg/scalar.json":  `/cfg/scalar.json:1: $include: keys beside it need the included file to hold an object`,
	} {
		_, err := Read(name, []byte(files[name]), opts)
		if err == nil || err.Error() != wantErr {
			t.Errorf("Read(%s) = %v\n  want %s", name, err, wantErr)
		}
	}
	if _, err := Read("/cfg/openclaw.json", []byte(files["/cfg/openclaw.json"]), Options{}); err == nil || !strings.Contains(err.Error(), "includes are not read here") {
		t.Errorf("Read with no ReadFile = %v, want includes refused", err)
	}
}

func TestDefaultName(t *testing.T) {
	for in, want := range map[string]string{
		"openclaw.json": "openclaw", "/x/.mcp.json": "mcp", "claude_desktop_config.json": "claude_desktop_config",
		"My Agent.json": "my-agent", "default.json": "agent", "...json": "agent",
	} {
		if got := DefaultName([]string{in}); got != want {
			t.Errorf("DefaultName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReadmeExample: the worked example in the README is what generate
// writes for testdata/example/openclaw.json.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "it writes (header comments cut):\n\n```yaml\n")
	if !ok {
		t.Fatal("README has no worked example")
	}
	want, _, _ := strings.Cut(rest, "```\n")
	r := readAs(t, "testdata/example", "openclaw.json", Options{})
	got := string(Generate(r, GenerateOptions{Name: "assistant"}))
	for strings.HasPrefix(got, "#") {
		_, got, _ = strings.Cut(got, "\n")
	}
	if got != want {
		t.Errorf("README example differs from what generate writes:\n%s", Diff("README.md", []byte(want), "generated", []byte(got)))
	}
}

// TestIncludeDepth: includes ten deep are read, eleven are refused.
func TestIncludeDepth(t *testing.T) {
	files := map[string]string{}
	for i := range 12 {
		files[fmt.Sprintf("/c/%d.json5", i)] = fmt.Sprintf(`{ $include: "./%d.json5" }`, i+1)
	}
	read := func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
	files["/c/10.json5"] = `{ agents: { defaults: { model: "groq/x" } } }`
	if _, err := Read("/c/0.json5", []byte(files["/c/0.json5"]), Options{ReadFile: read}); err != nil {
		t.Errorf("ten includes deep: %v", err)
	}
	files["/c/10.json5"] = `{ $include: "./11.json5" }`
	files["/c/11.json5"] = `{}`
	_, err := Read("/c/0.json5", []byte(files["/c/0.json5"]), Options{ReadFile: read})
	if err == nil || !strings.Contains(err.Error(), "more than 10 includes deep") {
		t.Errorf("eleven includes deep = %v, want refused", err)
	}
}
