package policygen

import (
	"fmt"
	"path/filepath"
	"strings"
)

// openclaw reads an openclaw.json: its model references (every one: a
// fallback is a second egress), custom provider base URLs, channels with
// their modes, accounts and overrides, MCP servers and the gateway's port.
func (r *reader) openclaw(top map[string]any) error {
	root := filepath.Dir(r.name)
	if !filepath.IsAbs(root) && r.opts.Dir != "" {
		root = filepath.Join(r.opts.Dir, root)
	}
	in := &includer{r: r, root: filepath.Clean(root)}
	in.chain = []string{in.abs(r.name)}
	resolved, err := in.resolve(top, r.name, r.data)
	if err != nil {
		return err
	}
	cfg, ok := resolved.(map[string]any)
	if !ok {
		return &Error{File: r.name, Line: 1, Msg: "$include at the top must hold an object"}
	}
	if err := r.models(cfg); err != nil {
		return err
	}
	if err := r.channels(cfg); err != nil {
		return err
	}
	mcp, err := r.obj(cfg, "mcp", "mcp")
	if err != nil {
		return err
	}
	if err := r.mcpServers(mcp, "servers", "mcp", false); err != nil {
		return err
	}
	return r.gateway(cfg)
}

// modelRef is one model reference and where it was.
type modelRef struct{ ref, key string }

func (r *reader) models(cfg map[string]any) error {
	var refs []modelRef
	agents, err := r.obj(cfg, "agents", "agents")
	if err != nil {
		return err
	}
	defaults, err := r.obj(agents, "defaults", "agents.defaults")
	if err != nil {
		return err
	}
	for _, k := range []string{"model", "imageModel"} {
		got, err := r.modelSpec(defaults, k, "agents.defaults."+k)
		if err != nil {
			return err
		}
		refs = append(refs, got...)
	}
	catalog, err := r.obj(defaults, "models", "agents.defaults.models")
	if err != nil {
		return err
	}
	for _, ref := range sortedKeys(catalog) {
		refs = append(refs, modelRef{ref, keyPath("agents.defaults.models", ref)})
	}
	list, err := r.list(agents, "list", "agents.list")
	if err != nil {
		return err
	}
	for i, a := range list {
		am, ok := a.(map[string]any)
		if !ok {
			return r.typeErr(fmt.Sprintf("agents.list[%d]", i), "an object")
		}
		key := fmt.Sprintf("agents.list[%d]", i)
		if id, ok := am["id"].(string); ok && id != "" {
			key += " (" + id + ")"
		}
		got, err := r.modelSpec(am, "model", key+".model")
		if err != nil {
			return err
		}
		refs = append(refs, got...)
	}
	channels, err := r.obj(cfg, "channels", "channels")
	if err != nil {
		return err
	}
	byChannel, err := r.obj(channels, "modelByChannel", "channels.modelByChannel")
	if err != nil {
		return err
	}
	for _, ch := range sortedKeys(byChannel) {
		m, err := r.obj(byChannel, ch, keyPath("channels.modelByChannel", ch))
		if err != nil {
			return err
		}
		for _, id := range sortedKeys(m) {
			if s, ok := m[id].(string); ok {
				refs = append(refs, modelRef{s, keyPath(keyPath("channels.modelByChannel", ch), id)})
			}
		}
	}

	models, err := r.obj(cfg, "models", "models")
	if err != nil {
		return err
	}
	custom, err := r.obj(models, "providers", "models.providers")
	if err != nil {
		return err
	}
	// A provider with a baseUrl is reached there, whatever the catalog says.
	based := map[string]bool{}
	for _, id := range sortedKeys(custom) {
		key := keyPath("models.providers", id)
		pm, err := r.obj(custom, id, key)
		if err != nil {
			return err
		}
		base, err := r.str(pm, "baseUrl", key+".baseUrl")
		if err != nil {
			return err
		}
		if base != "" {
			based[id] = true
			r.endpointNeed(key+".baseUrl", base, Need{Key: key + ".baseUrl"})
		}
	}
	seen := map[string]bool{}
	for _, m := range refs {
		id, _, ok := strings.Cut(m.ref, "/")
		if !ok || id == "" {
			r.warn(m.key, "a model reference without a provider (want provider/model); no rule written for it")
			continue
		}
		if based[id] || seen[id+" "+m.key] {
			continue
		}
		seen[id+" "+m.key] = true
		r.provider(id, m.key+" ("+m.ref+")")
	}
	return nil
}

// modelSpec reads a model setting: "provider/model", or an object with
// primary and fallbacks.
func (r *reader) modelSpec(m map[string]any, key, path string) ([]modelRef, error) {
	switch v := m[key].(type) {
	case nil:
		return nil, nil
	case string:
		return []modelRef{{v, path}}, nil
	case map[string]any:
		var out []modelRef
		p, err := r.str(v, "primary", path+".primary")
		if err != nil {
			return nil, err
		}
		if p != "" {
			out = append(out, modelRef{p, path + ".primary"})
		}
		fbs, err := r.strList(v, "fallbacks", path+".fallbacks")
		if err != nil {
			return nil, err
		}
		for i, fb := range fbs {
			out = append(out, modelRef{fb, fmt.Sprintf("%s.fallbacks[%d]", path, i)})
		}
		return out, nil
	}
	return nil, r.typeErr(path, "a model reference or an object with primary and fallbacks")
}

// provider adds what LLM provider id needs, for the model reference at key.
func (r *reader) provider(id, key string) {
	p, ok := providers[id]
	switch {
	case !ok:
		r.warn(key, "unknown LLM provider "+quote(id)+": no rule written; add models.providers."+id+".baseUrl, or a rule of your own")
	case p.Preset != "":
		r.need(Need{Preset: p.Preset, Key: key})
	case p.Local:
		r.note(key, p.Why+": on the agent's own loopback, no rule needed")
	default:
		r.warn(key, p.Why)
	}
}

// channelKinds are the channels read here; others are warned about.
var channelKinds = []string{"telegram", "slack", "discord", "whatsapp", "signal", "matrix", "mattermost", "googlechat", "irc", "imessage", "msteams"}

func (r *reader) channels(cfg map[string]any) error {
	chans, err := r.obj(cfg, "channels", "channels")
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(chans) {
		if name == "defaults" || name == "modelByChannel" {
			continue
		}
		key := keyPath("channels", name)
		c, err := r.obj(chans, name, key)
		if err != nil {
			return err
		}
		if disabled(c) {
			r.note(key, "enabled: false, no rule written")
			continue
		}
		known := false
		for _, k := range channelKinds {
			known = known || k == name
		}
		if !known {
			r.warn(key, "unknown channel: no rule written; run the agent under enforcement: audit and clawnet policy learn to find what it needs")
			continue
		}
		accounts, err := r.obj(c, "accounts", key+".accounts")
		if err != nil {
			return err
		}
		if len(accounts) == 0 {
			if err := r.channel(name, key, c); err != nil {
				return err
			}
			continue
		}
		for _, id := range sortedKeys(accounts) {
			akey := keyPath(key+".accounts", id)
			a, err := r.obj(accounts, id, akey)
			if err != nil {
				return err
			}
			if disabled(a) {
				r.note(akey, "enabled: false, no rule written")
				continue
			}
			// The channel's settings apply to every account unless the
			// account overrides them.
			eff := map[string]any{}
			for k, v := range c {
				if k != "accounts" {
					eff[k] = v
				}
			}
			for k, v := range a {
				eff[k] = v
			}
			if err := r.channel(name, akey, eff); err != nil {
				return err
			}
		}
	}
	return nil
}

// channel adds what one channel account needs.
func (r *reader) channel(name, key string, c map[string]any) error {
	proxy, err := r.str(c, "proxy", key+".proxy")
	if err != nil {
		return err
	}
	// Through a proxy, the proxy is the one destination of the channel's
	// API traffic.
	api := func(mode string, hosts, unverified []string) {
		if proxy != "" {
			r.endpointNeed(key+".proxy", proxy, Need{Key: key + ".proxy (" + mode + ")"})
			return
		}
		if len(hosts) > 0 {
			r.need(Need{Hosts: hosts, Ports: []uint16{443}, Key: key + " (" + mode + ")"})
		}
		if len(unverified) > 0 {
			r.need(Need{Hosts: unverified, Ports: []uint16{443}, Key: key + " (" + mode + ")", Unverified: true})
		}
	}
	override := func(field, mode string) (bool, error) {
		u, err := r.str(c, field, key+"."+field)
		if err != nil || u == "" {
			return false, err
		}
		if proxy != "" {
			r.endpointNeed(key+".proxy", proxy, Need{Key: key + ".proxy (" + mode + ")"})
		} else {
			r.endpointNeed(key+"."+field, u, Need{Key: key + "." + field + " (" + mode + ")"})
		}
		return true, nil
	}
	switch name {
	case "telegram":
		hook, err := r.str(c, "webhookUrl", key+".webhookUrl")
		if err != nil {
			return err
		}
		mode := "long polling"
		if hook != "" {
			mode = "webhook mode"
			port, set, err := r.port(c, "webhookPort", key+".webhookPort")
			if err != nil {
				return err
			}
			why := key + ".webhookPort"
			if !set {
				port, why = openclawTelegramHook, key+" (webhook mode: webhookPort default 8787)"
			}
			r.need(Need{Ingress: true, Ports: []uint16{port}, Key: why + ", Telegram posting to webhookUrl through a proxy on the host"})
		}
		if ok, err := override("apiRoot", mode); err != nil || ok {
			return err
		}
		api(mode, channels["telegram"].Hosts, nil)
	case "slack":
		m, err := r.str(c, "mode", key+".mode")
		if err != nil {
			return err
		}
		_, signing := c["signingSecret"]
		_, app := c["appToken"]
		if m == "http" || m == "" && signing && !app {
			api("HTTP mode", channels["slack"].Hosts, nil)
			r.need(Need{Ingress: true, Ports: []uint16{openclawGatewayPort}, Key: key + " (HTTP mode: Slack posts events to the gateway's port)"})
			return nil
		}
		api("socket mode", append(channels["slack"].Hosts, channels["slack-wss"].Hosts...), nil)
	case "discord":
		e := channels["discord"]
		api("gateway and REST", e.Hosts, e.Unverified)
		if v, _ := c["voice"].(map[string]any); v != nil && !disabled(v) && v["enabled"] == true {
			r.warn(key+".voice", "Discord voice sends UDP to addresses the voice gateway hands out, which no name rule can open; voice will not work under this policy")
		}
	case "whatsapp":
		e := channels["whatsapp"]
		api("Baileys web socket", e.Hosts, e.Unverified)
	case "signal":
		u, err := r.str(c, "httpUrl", key+".httpUrl")
		if err != nil {
			return err
		}
		if u != "" {
			r.endpointNeed(key+".httpUrl", u, Need{Key: key + ".httpUrl (signal-cli daemon)"})
			return nil
		}
		e := channels["signal"]
		api("signal-cli in the agent", e.Hosts, e.Unverified)
	case "matrix":
		if ok, err := override("homeserver", "homeserver"); err != nil || ok {
			return err
		}
		r.warn(key, "no homeserver set: no rule written")
	case "mattermost":
		if ok, err := override("baseUrl", "server"); err != nil || ok {
			return err
		}
		r.warn(key, "no baseUrl set: no rule written")
	case "googlechat":
		api("Chat API", nil, channels["googlechat"].Unverified)
		r.need(Need{Ingress: true, Ports: []uint16{openclawGatewayPort}, Key: key + " (Google Chat posts events to the gateway's port)"})
	case "irc":
		host, err := r.str(c, "host", key+".host")
		if err != nil {
			return err
		}
		if host == "" {
			r.warn(key, "no host set: no rule written")
			return nil
		}
		port, set, err := r.port(c, "port", key+".port")
		if err != nil {
			return err
		}
		if !set {
			port = 6697
			if tls, ok := c["tls"].(bool); ok && !tls {
				port = 6667
			}
		}
		r.endpointNeed(key+".host", fmt.Sprintf("irc://%s:%d", host, port), Need{Key: key + ".host"})
	case "imessage":
		r.note(key, "imsg runs on a Mac, over stdio or an SSH wrapper: no rule written (an SSH wrapper needs a rule for its host)")
	case "msteams":
		r.warn(key, "Microsoft Teams' endpoints are not in the catalog: no rule written; learn them with enforcement: audit")
	}
	return nil
}

// gateway adds the inbound rule for the OpenClaw gateway's port, and the
// remote gateway a CLI in remote mode connects to.
func (r *reader) gateway(cfg map[string]any) error {
	g, err := r.obj(cfg, "gateway", "gateway")
	if err != nil {
		return err
	}
	remote, err := r.obj(g, "remote", "gateway.remote")
	if err != nil {
		return err
	}
	if u, err := r.str(remote, "url", "gateway.remote.url"); err != nil {
		return err
	} else if u != "" {
		r.endpointNeed("gateway.remote.url", u, Need{Key: "gateway.remote.url"})
	}
	if m, _ := g["mode"].(string); m == "remote" {
		return nil
	}
	port, set, err := r.port(g, "port", "gateway.port")
	if err != nil {
		return err
	}
	key := "gateway.port"
	if !set {
		port, key = openclawGatewayPort, "gateway.port (default 18789)"
	}
	r.need(Need{Ingress: true, Ports: []uint16{port}, Key: key + ": control UI, CLI and channel webhooks, from the host through a published port"})
	bind, err := r.str(g, "bind", "gateway.bind")
	if err != nil {
		return err
	}
	if bind == "" || bind == "loopback" {
		r.note("gateway.bind", "loopback (the default): a published port reaches the agent on its own interface, so the gateway must listen there too (bind: lan)")
	}
	return nil
}

func quote(s string) string { return fmt.Sprintf("%q", s) }
