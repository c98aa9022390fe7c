package policygen

import (
	"path/filepath"
	"slices"
	"strings"
)

// claudeCode reads a repository's .mcp.json (project scope: pending) or
// the user's ~/.claude.json: its own servers, those of each project it
// keeps (local scope, the user's own), and Claude Code's own API.
func (r *reader) claudeCode(top map[string]any) error {
	if filepath.Base(r.name) == ".mcp.json" {
		return r.mcpServers(top, "mcpServers", "", true)
	}
	r.need(Need{Preset: "anthropic", Key: "Claude Code itself (its API)"})
	if err := r.mcpServers(top, "mcpServers", "", false); err != nil {
		return err
	}
	projects, err := r.obj(top, "projects", "projects")
	if err != nil {
		return err
	}
	for _, dir := range sortedKeys(projects) {
		key := keyPath("projects", dir)
		p, err := r.obj(projects, dir, key)
		if err != nil {
			return err
		}
		if err := r.mcpServers(p, "mcpServers", key, false); err != nil {
			return err
		}
	}
	return nil
}

// gemini reads Gemini CLI's settings.json: its servers (url is SSE,
// httpUrl streamable HTTP) and the Gemini API the CLI itself calls.
func (r *reader) gemini(top map[string]any) error {
	r.need(Need{Preset: "gemini", Key: "Gemini CLI itself (the Gemini API; a Google sign-in or Vertex AI needs rules of their own)"})
	return r.mcpServers(top, "mcpServers", "", false)
}

// codex reads Codex's config.toml: [mcp_servers.NAME] tables, the model
// provider (openai unless model_provider says otherwise) and the base URLs
// of [model_providers.ID].
func (r *reader) codex(top map[string]any) error {
	mp, err := r.str(top, "model_provider", "model_provider")
	if err != nil {
		return err
	}
	key := "model_provider"
	if mp == "" {
		mp, key = "openai", "model_provider (default openai)"
	}
	custom, err := r.obj(top, "model_providers", "model_providers")
	if err != nil {
		return err
	}
	for _, id := range sortedKeys(custom) {
		pkey := keyPath("model_providers", id)
		p, err := r.obj(custom, id, pkey)
		if err != nil {
			return err
		}
		u, err := r.str(p, "base_url", pkey+".base_url")
		if err != nil {
			return err
		}
		if u != "" {
			r.endpointNeed(pkey+".base_url", u, Need{Key: pkey + ".base_url"})
		} else if id == mp {
			r.provider(mp, key)
		}
	}
	if _, ok := custom[mp]; !ok {
		r.provider(mp, key)
	}
	return r.mcpServers(top, "mcp_servers", "", false)
}

// mcpServers reads the map of MCP servers at m[field], one entry per
// server name: url (or httpUrl, serverUrl) for a remote server, command
// and args for a stdio one. Env, headers and tokens are never read.
func (r *reader) mcpServers(m map[string]any, field, prefix string, pending bool) error {
	path := keyPath(prefix, field)
	servers, err := r.obj(m, field, path)
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(servers) {
		key := keyPath(path, name)
		s, err := r.obj(servers, name, key)
		if err != nil {
			return err
		}
		if err := r.mcpServer(key, s, pending); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) mcpServer(key string, m map[string]any, pending bool) error {
	if disabled(m) {
		r.note(key, "disabled, no rule written")
		return nil
	}
	for _, f := range []string{"url", "httpUrl", "serverUrl"} {
		u, err := r.str(m, f, key+"."+f)
		if err != nil {
			return err
		}
		if u != "" {
			r.endpointNeed(key+"."+f, u, Need{Key: key + "." + f, Pending: pending})
			return nil
		}
	}
	cmd, err := r.str(m, "command", key+".command")
	if err != nil {
		return err
	}
	if cmd == "" {
		r.warn(key, "neither command nor url: no rule written")
		return nil
	}
	args, err := r.strList(m, "args", key+".args")
	if err != nil {
		return err
	}
	r.stdio(key, cmd, args, pending)
	return nil
}

// stdio reads a stdio server's command line: a launcher that downloads a
// known package (a setup need, then the package's own needs), or else an
// unknown server. Only the launcher's name and the package's name are ever
// repeated: other arguments may hold secrets.
func (r *reader) stdio(key, cmd string, args []string, pending bool) {
	base := cmdBase(cmd)
	switch {
	case (base == "npm" || base == "pnpm" || base == "yarn") && len(args) > 0 && (args[0] == "exec" || args[0] == "dlx"):
		base, args = "npx", args[1:]
	case base == "uv" && len(args) > 1 && args[0] == "tool" && args[1] == "run":
		base, args = "uvx", args[2:]
	case base == "pipx" && len(args) > 0 && args[0] == "run":
		base, args = "uvx", args[1:]
	case (base == "docker" || base == "podman") && len(args) > 0 && args[0] == "run":
		args = args[1:]
	case base == "docker" || base == "podman":
		r.unknown(key, base, pending)
		return
	}
	l, ok := launchers[base]
	if !ok {
		r.unknown(key, base, pending)
		return
	}
	pkg, rest := packageArg(l.Kind, args)
	if pkg == "" {
		r.warn(key, base+" with no package to run: no rule written")
		return
	}
	name := pkg
	if l.Kind == "docker" {
		r.image(key, pkg, pending)
		name = imageName(pkg)
	} else {
		r.need(Need{Preset: l.Preset, Phase: Setup, Key: key + " (" + base + " downloads " + pkg + ")", Pending: pending})
		name = packageName(l.Kind, pkg)
	}
	s, ok := servers[name]
	switch {
	case !ok:
		r.unknown(key, base+" "+name, pending)
	case s.Local:
		r.note(key, name+" works on local files and state: no rule of its own")
	case s.OpenWeb:
		r.warn(key, name+" fetches whatever it is asked to: no rule can list that; add rules for the sites it should reach")
	case s.Remote, s.DSN != 0:
		for _, a := range rest {
			if strings.Contains(a, "://") && !strings.HasPrefix(a, "-") {
				what := "mcp-remote URL"
				if s.DSN != 0 {
					what = "database URL"
				}
				r.endpointNeed(key+".args", a, Need{Key: key + ".args (" + what + ")", Pending: pending})
				return
			}
		}
		r.warn(key, name+" without a URL in its args: no rule written")
	default:
		k := key + " (" + name + ")"
		if s.Note != "" {
			k += ", " + s.Note
		}
		r.need(Need{Hosts: s.Hosts, Ports: []uint16{443}, Key: k, Pending: pending, Unverified: s.Unverified})
	}
}

func (r *reader) unknown(key, what string, pending bool) {
	r.res.Unknown = append(r.res.Unknown, Unknown{File: clean(r.name), Key: clean(key), What: clean(what), Pending: pending})
}

// image adds the registry a docker run pulls image from, at setup.
func (r *reader) image(key, image string, pending bool) {
	k := key + " (docker pulls " + imageName(image) + ")"
	reg := registryOf(image)
	if reg == "docker.io" {
		r.need(Need{Preset: "docker-hub", Phase: Setup, Key: k, Pending: pending})
		return
	}
	if e, ok := registries[reg]; ok {
		r.need(Need{Hosts: e.Hosts, Ports: []uint16{443}, Phase: Setup, Key: k, Pending: pending})
		if len(e.Unverified) > 0 {
			r.need(Need{Hosts: e.Unverified, Ports: []uint16{443}, Phase: Setup, Key: k + ", " + e.Note, Pending: pending, Unverified: true})
		}
		return
	}
	r.endpointNeed(key+".args", "https://"+reg, Need{Phase: Setup, Key: k, Pending: pending})
}

// Flags of each launcher that take a value as the next argument.
var valueFlags = map[string][]string{
	"npm":    {"--registry", "--cache", "--userconfig", "-c", "--call", "--node-options"},
	"pypi":   {"--with", "--python", "-p", "--index-url", "--index", "--extra-index-url", "--spec", "--python-preference"},
	"docker": {"-e", "--env", "--env-file", "-v", "--volume", "--mount", "--name", "-p", "--publish", "--network", "--net", "-w", "--workdir", "--entrypoint", "-u", "--user", "-l", "--label", "--platform", "--pull", "--add-host", "--cap-add", "--cap-drop", "--memory", "-m", "--cpus", "-h", "--hostname", "--dns", "--tmpfs", "--device", "--ulimit", "--security-opt", "--log-driver", "--log-opt", "--restart", "--shm-size", "--runtime", "--init-path", "--gpus", "--ipc", "--pid", "--uts", "--cgroupns", "--group-add", "--label-file", "--stop-signal", "--stop-timeout"},
}

// packageArg finds the package (or image) a launcher's arguments run, and
// the arguments after it, which go to the package.
func packageArg(kind string, args []string) (string, []string) {
	vf := valueFlags[kind]
	pkgFlag := map[string]bool{}
	switch kind {
	case "npm":
		pkgFlag["-p"], pkgFlag["--package"] = true, true
	case "pypi":
		pkgFlag["--from"] = true
	}
	named := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			continue
		}
		if strings.HasPrefix(a, "-") {
			flag, val, hasVal := strings.Cut(a, "=")
			switch {
			case pkgFlag[flag] && hasVal:
				named = val
			case pkgFlag[flag] && i+1 < len(args):
				named = args[i+1]
				i++
			case !hasVal && slices.Contains(vf, flag):
				i++
			}
			continue
		}
		if named != "" {
			return named, args[i:]
		}
		return a, args[i+1:]
	}
	return named, nil
}

// packageName is a package without its version: "@scope/name@1.2" is
// "@scope/name", "name==1.0" and "name[extra]" are "name".
func packageName(kind, pkg string) string {
	if kind == "npm" {
		if i := strings.LastIndex(pkg, "@"); i > 0 {
			return pkg[:i]
		}
		return pkg
	}
	if i := strings.IndexAny(pkg, "=<>~![@ "); i > 0 {
		pkg = pkg[:i]
	}
	return strings.ToLower(pkg)
}

// registryOf is the registry part of an image reference, docker.io when
// it names none.
func registryOf(image string) string {
	first, _, ok := strings.Cut(image, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return strings.ToLower(first)
	}
	return "docker.io"
}

// imageName is an image reference without its tag or digest.
func imageName(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}
