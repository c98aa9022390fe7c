package policygen

// The catalog: from what a configuration says to what the agent needs of
// the network. Each entry has a test in catalog_test.go. An entry marked
// unverified names hosts that could not be checked against the service's
// own documentation; its rules are written with a note to check them.
// Never add a host here that nobody has seen the service use.

// provider is an LLM provider, by the id OpenClaw model references use
// ("anthropic/claude-opus-4-6" is provider "anthropic").
type provider struct {
	// Preset is the clawnet preset that covers it.
	Preset string
	Hosts  []string
	// Local providers listen on the agent's own loopback by default.
	Local bool
	// Why, for providers whose hosts depend on more than the config says.
	Why string
}

var providers = map[string]provider{
	"anthropic":  {Preset: "anthropic"},
	"openai":     {Preset: "openai"},
	"google":     {Preset: "gemini"},
	"gemini":     {Preset: "gemini"},
	"openrouter": {Preset: "openrouter"},
	"groq":       {Preset: "groq"},
	"mistral":    {Preset: "mistral"},
	"deepseek":   {Preset: "deepseek"},
	"together":   {Preset: "together"},
	"cohere":     {Preset: "cohere"},
	"xai":        {Preset: "xai"},
	"ollama":     {Local: true, Why: "Ollama listens on 127.0.0.1:11434 unless models.providers.ollama.baseUrl says otherwise"},
	"lmstudio":   {Local: true, Why: "LM Studio listens on 127.0.0.1:1234 unless models.providers.lmstudio.baseUrl says otherwise"},
	// Known providers whose endpoints depend on an account, a region or a
	// sign-in the configuration does not spell out.
	"amazon-bedrock": {Why: "Bedrock's endpoints are per region (bedrock-runtime.REGION.amazonaws.com); add a rule for yours"},
	"google-vertex":  {Why: "Vertex AI's endpoints are per region (REGION-aiplatform.googleapis.com); add a rule for yours"},
	"azure":          {Why: "Azure OpenAI endpoints are per resource (RESOURCE.openai.azure.com); add a rule for yours"},
	"github-copilot": {Why: "GitHub Copilot's endpoints come from its sign-in; learn them with enforcement: audit and clawnet policy learn"},
	"openai-codex":   {Why: "the ChatGPT sign-in's endpoints are not documented; learn them with enforcement: audit and clawnet policy learn"},
}

// channelHosts are what each OpenClaw channel reaches by default, before
// overrides such as apiRoot, homeserver, baseUrl or proxy.
type channelEntry struct {
	Hosts      []string
	Unverified []string // hosts seen in client code or traffic, not in the service's documentation
	Note       string
}

var channels = map[string]channelEntry{
	// The Bot API, for getUpdates long polling and every send.
	"telegram": {Hosts: []string{"api.telegram.org"}},
	// The Web API; Socket Mode's apps.connections.open answers a
	// wss://wss-primary.slack.com URL, wss-backup.slack.com being its
	// fallback; files.slack.com serves url_private file downloads.
	"slack":      {Hosts: []string{"slack.com", "files.slack.com"}},
	"slack-wss":  {Hosts: []string{"wss-primary.slack.com", "wss-backup.slack.com"}},
	"discord":    {Hosts: []string{"discord.com", "gateway.discord.gg", "cdn.discordapp.com"}, Unverified: []string{"*.discord.gg", "media.discordapp.net"}, Note: "a resumed session reconnects to the resume_gateway_url Discord hands out, a discord.gg name"},
	"whatsapp":   {Hosts: []string{"web.whatsapp.com"}, Unverified: []string{"mmg.whatsapp.net"}, Note: "Baileys' web socket is wss://web.whatsapp.com/ws/chat; media may come from other whatsapp.net names: learn them"},
	"signal":     {Hosts: []string{"chat.signal.org"}, Unverified: []string{"storage.signal.org", "cdn.signal.org", "cdn2.signal.org", "cdn3.signal.org", "cdsi.signal.org", "svr2.signal.org"}, Note: "signal-cli run by OpenClaw inside the agent"},
	"googlechat": {Unverified: []string{"chat.googleapis.com", "oauth2.googleapis.com"}},
}

// server is a well-known MCP server, by the package a launcher runs or
// the image docker runs.
type server struct {
	Hosts      []string
	Unverified bool
	// Local servers need no network of their own.
	Local bool
	// OpenWeb servers fetch whatever they are asked to: no rule can list it.
	OpenWeb bool
	// DSN: the host comes from a database URL in the arguments, at this
	// default port.
	DSN uint16
	// Remote: the server is a bridge to the http(s) URL in its arguments.
	Remote bool
	// Note is said with the rule.
	Note string
}

var servers = map[string]server{
	"@modelcontextprotocol/server-github":              {Hosts: []string{"api.github.com"}},
	"ghcr.io/github/github-mcp-server":                 {Hosts: []string{"api.github.com"}},
	"@modelcontextprotocol/server-gitlab":              {Hosts: []string{"gitlab.com"}, Note: "GITLAB_API_URL in its env can point elsewhere"},
	"@modelcontextprotocol/server-slack":               {Hosts: []string{"slack.com"}},
	"@modelcontextprotocol/server-brave-search":        {Hosts: []string{"api.search.brave.com"}},
	"@modelcontextprotocol/server-google-maps":         {Hosts: []string{"maps.googleapis.com"}},
	"@notionhq/notion-mcp-server":                      {Hosts: []string{"api.notion.com"}},
	"@sentry/mcp-server":                               {Hosts: []string{"sentry.io"}, Unverified: true},
	"@modelcontextprotocol/server-postgres":            {DSN: 5432},
	"mcp-remote":                                       {Remote: true},
	"@modelcontextprotocol/server-filesystem":          {Local: true},
	"@modelcontextprotocol/server-memory":              {Local: true},
	"@modelcontextprotocol/server-sequential-thinking": {Local: true},
	"@modelcontextprotocol/server-everything":          {Local: true},
	"mcp-server-git":                                   {Local: true},
	"mcp-server-time":                                  {Local: true},
	"mcp-server-sqlite":                                {Local: true},
	"mcp-server-fetch":                                 {OpenWeb: true},
	"@modelcontextprotocol/server-puppeteer":           {OpenWeb: true},
	"@playwright/mcp":                                  {OpenWeb: true},
}

// launcher is a command that downloads what it runs.
type launcher struct {
	// Preset covers the download.
	Preset string
	// Kind says how the package or image is found in the arguments.
	Kind string // "npm", "pypi", "docker"
}

var launchers = map[string]launcher{
	"npx":    {Preset: "npm", Kind: "npm"},
	"bunx":   {Preset: "npm", Kind: "npm"},
	"pnpx":   {Preset: "npm", Kind: "npm"},
	"uvx":    {Preset: "pypi", Kind: "pypi"},
	"docker": {Kind: "docker"},
	"podman": {Kind: "docker"},
}

// registries are where docker run pulls an image from, by the image
// reference's registry part; Docker Hub is the docker-hub preset.
var registries = map[string]channelEntry{
	"ghcr.io": {Hosts: []string{"ghcr.io"}, Unverified: []string{"pkg-containers.githubusercontent.com"}, Note: "layers are served from pkg-containers.githubusercontent.com"},
}

// Ports OpenClaw listens on by default.
const (
	openclawGatewayPort  = 18789 // gateway.port: control UI, CLI and channel webhooks
	openclawTelegramHook = 8787  // channels.telegram.webhookPort
)
