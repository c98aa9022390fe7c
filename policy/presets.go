package policy

import "slices"

// Preset is a bundle of names shipped with clawnet that a policy can list
// under presets. Every preset allows HTTPS (tcp 443) to its names and
// nothing else. PRESETS.md documents them; a test keeps it in step.
type Preset struct {
	Name        string
	Description string
	// LLM marks the providers that may be the gateway's llm_provider.
	LLM     bool
	Domains []string
	Ports   []uint16
}

var https = []uint16{443}

// presets is kept sorted by name. Only the API endpoints are listed:
// consoles, docs and telemetry are left out on purpose.
var presets = []Preset{
	{Name: "anthropic", LLM: true, Description: "Anthropic API (Claude)",
		Domains: []string{"api.anthropic.com"}, Ports: https},
	{Name: "cohere", LLM: true, Description: "Cohere API",
		Domains: []string{"api.cohere.com", "api.cohere.ai"}, Ports: https},
	{Name: "crates", Description: "crates.io, the Rust package registry (sparse index and downloads)",
		Domains: []string{"crates.io", "index.crates.io", "static.crates.io"}, Ports: https},
	{Name: "deepseek", LLM: true, Description: "DeepSeek API",
		Domains: []string{"api.deepseek.com"}, Ports: https},
	{Name: "docker-hub", Description: "Docker Hub image pulls (registry, token service, blob CDN)",
		Domains: []string{"registry-1.docker.io", "auth.docker.io", "production.cloudflare.docker.com"}, Ports: https},
	{Name: "gemini", LLM: true, Description: "Google Gemini API (Generative Language API)",
		Domains: []string{"generativelanguage.googleapis.com"}, Ports: https},
	{Name: "github", Description: "GitHub: git over HTTPS, the REST API, archives, raw files and release assets (no SSH)",
		Domains: []string{
			"github.com", "api.github.com", "codeload.github.com", "uploads.github.com",
			"raw.githubusercontent.com", "objects.githubusercontent.com", "release-assets.githubusercontent.com",
		}, Ports: https},
	{Name: "go", Description: "Go module proxy and checksum database",
		Domains: []string{"proxy.golang.org", "sum.golang.org"}, Ports: https},
	{Name: "groq", LLM: true, Description: "Groq API",
		Domains: []string{"api.groq.com"}, Ports: https},
	{Name: "mistral", LLM: true, Description: "Mistral AI API (La Plateforme and Codestral)",
		Domains: []string{"api.mistral.ai", "codestral.mistral.ai"}, Ports: https},
	{Name: "npm", Description: "npm registry",
		Domains: []string{"registry.npmjs.org"}, Ports: https},
	{Name: "openai", LLM: true, Description: "OpenAI API",
		Domains: []string{"api.openai.com"}, Ports: https},
	{Name: "openrouter", LLM: true, Description: "OpenRouter API",
		Domains: []string{"openrouter.ai"}, Ports: https},
	{Name: "pypi", Description: "Python Package Index (index and package files)",
		Domains: []string{"pypi.org", "files.pythonhosted.org"}, Ports: https},
	{Name: "together", LLM: true, Description: "Together AI API",
		Domains: []string{"api.together.xyz", "api.together.ai"}, Ports: https},
	{Name: "xai", LLM: true, Description: "xAI API (Grok)",
		Domains: []string{"api.x.ai"}, Ports: https},
}

// Presets lists the presets shipped with clawnet, sorted by name.
func Presets() []Preset {
	out := make([]Preset, len(presets))
	for i, p := range presets {
		p.Domains = slices.Clone(p.Domains)
		p.Ports = slices.Clone(p.Ports)
		out[i] = p
	}
	return out
}

// LookupPreset returns the preset called name.
func LookupPreset(name string) (Preset, bool) {
	for _, p := range presets {
		if p.Name == name {
			p.Domains, p.Ports = slices.Clone(p.Domains), slices.Clone(p.Ports)
			return p, true
		}
	}
	return Preset{}, false
}

func presetNames() []string {
	out := make([]string, len(presets))
	for i, p := range presets {
		out[i] = p.Name
	}
	return out
}
