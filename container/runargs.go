package container

import (
	"errors"
	"fmt"
	"strings"
)

// RunUsage is the synopsis of `clawnet run`.
const RunUsage = "clawnet run [--name NAME] [--policy POLICY] [--agent-config FILE]... [--policy-dir DIR] [--setup-timeout D] [-p [HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp]]... [--engine-cli CLI] [docker run options] -- IMAGE [CMD...]"

// ParseRunArgs splits `clawnet run` arguments: clawnet's own --name,
// --policy, --agent-config, --policy-dir, --setup-timeout, -p/--publish and
// --engine-cli, the
// docker run options before "--", then the image and its command. --name
// names both the agent and its container; -p publishes through the gateway,
// never through the engine; --agent-config and --policy-dir are for the CLI,
// which generates the agent's policy before Run (RunOptions.AgentConfig);
// --engine-cli is RunOptions.EngineCLI. The CLI should hand it the raw
// arguments (docker's options are not clawnet flags).
func ParseRunArgs(args []string) (RunOptions, error) {
	var o RunOptions
	sep := -1
	for i, a := range args {
		if a == "--" {
			sep = i
			break
		}
	}
	if sep < 0 {
		return o, fmt.Errorf("clawnet run: missing \"--\" before the image (usage: %s)", RunUsage)
	}
	rest := args[sep+1:]
	if len(rest) == 0 || rest[0] == "" {
		return o, fmt.Errorf("clawnet run: missing image after \"--\" (usage: %s)", RunUsage)
	}
	o.Image, o.Cmd = rest[0], rest[1:]
	opts, err := scanDockerOpts(args[:sep])
	if err != nil {
		return o, err
	}
	for _, op := range opts {
		switch op.name {
		case "--name":
			o.Name = op.value
		case "--policy":
			o.Policy = op.value
		case "--publish":
			o.Publish = append(o.Publish, op.value)
		case "--engine-cli":
			o.EngineCLI = op.value
		case "--agent-config":
			o.AgentConfig = append(o.AgentConfig, op.value)
		case "--policy-dir":
			o.PolicyDir = op.value
		case "--setup-timeout":
			o.SetupTimeout = op.value
		default:
			o.DockerArgs = append(o.DockerArgs, op.raw...)
		}
	}
	return o, nil
}

// dockerOpt is one option as given: its canonical long name, its value (""
// for a boolean) and the tokens it was written as.
type dockerOpt struct {
	name  string
	value string
	raw   []string
}

// docker run's boolean flags; every other option takes a value. An option
// docker adds later is assumed to take a value unless written --opt=value.
var dockerBoolFlags = map[string]bool{
	"--detach": true, "--interactive": true, "--tty": true, "--rm": true,
	"--init": true, "--privileged": true, "--publish-all": true, "--read-only": true,
	"--sig-proxy": true, "--disable-content-trust": true, "--no-healthcheck": true,
	"--oom-kill-disable": true, "--quiet": true, "--help": true, "--use-api-socket": true,
}

var dockerShort = map[byte]string{
	'd': "--detach", 'i': "--interactive", 't': "--tty", 'P': "--publish-all", 'q': "--quiet",
	'a': "--attach", 'c': "--cpu-shares", 'e': "--env", 'h': "--hostname", 'l': "--label",
	'm': "--memory", 'p': "--publish", 'u': "--user", 'v': "--volume", 'w': "--workdir",
}

// scanDockerOpts tokenizes docker run options well enough to find the ones
// clawnet must handle, without misreading an option's value as an option.
func scanDockerOpts(args []string) ([]dockerOpt, error) {
	var out []dockerOpt
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a, "=")
			switch {
			case hasVal:
				out = append(out, dockerOpt{name: name, value: val, raw: []string{a}})
			case dockerBoolFlags[name]:
				out = append(out, dockerOpt{name: name, raw: []string{a}})
			case clawnetOpts[name] || !unknownBoolish(args, i):
				if i+1 >= len(args) {
					return nil, fmt.Errorf("clawnet run: option %s needs a value", name)
				}
				out = append(out, dockerOpt{name: name, value: args[i+1], raw: []string{a, args[i+1]}})
				i++
			default:
				out = append(out, dockerOpt{name: name, raw: []string{a}})
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// A group of short flags: booleans, then at most one that takes
			// the rest of the token or the next one as its value (-it, -e X, -eX).
			for j := 1; j < len(a); j++ {
				long, ok := dockerShort[a[j]]
				if !ok {
					return nil, fmt.Errorf("clawnet run: unknown docker run option -%c in %q", a[j], a)
				}
				if dockerBoolFlags[long] {
					out = append(out, dockerOpt{name: long, raw: []string{"-" + string(a[j])}})
					continue
				}
				v := a[j+1:]
				raw := []string{"-" + string(a[j]) + v}
				if v == "" {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("clawnet run: option -%c needs a value", a[j])
					}
					v = args[i+1]
					raw = []string{"-" + string(a[j]), v}
					i++
				}
				out = append(out, dockerOpt{name: long, value: strings.TrimPrefix(v, "="), raw: raw})
				break
			}
		default:
			return nil, fmt.Errorf("clawnet run: unexpected %q before \"--\" (usage: %s)", a, RunUsage)
		}
	}
	return out, nil
}

// clawnetOpts are clawnet run's own options; each takes a value.
var clawnetOpts = map[string]bool{"--name": true, "--policy": true, "--agent-config": true, "--policy-dir": true, "--setup-timeout": true, "--engine-cli": true}

// unknownBoolish guesses, for an option clawnet does not know, that it is a
// boolean when the next token is another option or there is none.
func unknownBoolish(args []string, i int) bool {
	name, _, _ := strings.Cut(args[i], "=")
	if _, known := knownValueOpts[name]; known {
		return false
	}
	return i+1 >= len(args) || strings.HasPrefix(args[i+1], "-")
}

// Options whose value may itself start with "-" (so the guess above must
// not apply to them), plus every option clawnet acts on.
var knownValueOpts = map[string]struct{}{
	"--env": {}, "--entrypoint": {}, "--label": {}, "--volume": {}, "--workdir": {},
	"--user": {}, "--network": {}, "--net": {}, "--publish": {}, "--expose": {},
	"--dns": {}, "--dns-search": {}, "--dns-option": {}, "--dns-opt": {}, "--add-host": {},
	"--hostname": {}, "--mac-address": {}, "--ip": {}, "--ip6": {}, "--link": {},
	"--network-alias": {}, "--net-alias": {}, "--link-local-ip": {}, "--mount": {},
	"--memory": {}, "--cpus": {}, "--cap-add": {}, "--cap-drop": {}, "--security-opt": {},
	"--tmpfs": {}, "--ulimit": {}, "--env-file": {}, "--restart": {}, "--stop-signal": {},
	"--platform": {}, "--pull": {}, "--runtime": {}, "--user-ns": {}, "--userns": {}, "--engine-cli": {},
	"--pid": {}, "--ipc": {}, "--uts": {}, "--cgroupns": {}, "--domainname": {},
}

// holderOpts are the options Docker refuses on a container that joins
// another's network (`--network container:`), so clawnet sets them on the
// holder instead: they describe the shared namespace and its resolv.conf
// and hosts files. On Podman the DNS ones go into the agent's resolv.conf
// (see writeHolderResolvConf).
type holderOpts struct {
	hostname   string
	dns        []string
	dnsSearch  []string
	dnsOptions []string
	extraHosts []string
	// ownResolvConf: the agent mounts a file of its own at
	// /etc/resolv.conf, which clawnet then leaves alone.
	ownResolvConf bool
}

// errNetworkOpt is wrapped by the refusals of options that would give the
// agent another network or expose it.
var errNetworkOpt = errors.New("network option not allowed")

// splitRunArgs moves namespace options to the holder and refuses the ones
// that contradict the agent's single network; the rest go to the agent.
func splitRunArgs(args []string) (holderOpts, []string, error) {
	var h holderOpts
	opts, err := scanDockerOpts(args)
	if err != nil {
		return h, nil, err
	}
	var agent []string
	for _, op := range opts {
		switch op.name {
		case "--hostname":
			h.hostname = op.value
		case "--dns":
			h.dns = append(h.dns, op.value)
		case "--dns-search":
			h.dnsSearch = append(h.dnsSearch, op.value)
		case "--dns-option", "--dns-opt":
			h.dnsOptions = append(h.dnsOptions, op.value)
		case "--add-host":
			h.extraHosts = append(h.extraHosts, op.value)
		case "--network", "--net", "--network-alias", "--net-alias", "--link", "--ip", "--ip6",
			"--link-local-ip", "--mac-address":
			return h, nil, fmt.Errorf("clawnet run: %s cannot be used: clawnet's gateway is the container's only network (%w)", op.name, errNetworkOpt)
		case "--publish-all", "--expose":
			return h, nil, fmt.Errorf("clawnet run: %s cannot be used: the agent's only peer is clawnet's gateway; publish each port with -p HOST_PORT:AGENT_PORT (%w)", op.name, errNetworkOpt)
		case "--name", "--policy", "--publish", "--agent-config", "--policy-dir", "--setup-timeout", "--engine-cli":
			return h, nil, fmt.Errorf("clawnet run: give %s to clawnet run (RunOptions), not among the docker options", op.name)
		default:
			h.ownResolvConf = h.ownResolvConf || mountsResolvConf(op)
			agent = append(agent, op.raw...)
		}
	}
	return h, agent, nil
}

// mountsResolvConf says whether op mounts something at /etc/resolv.conf:
// -v SRC:/etc/resolv.conf[:OPTS] or --mount ...,target=/etc/resolv.conf.
func mountsResolvConf(op dockerOpt) bool {
	const target = "/etc/resolv.conf"
	switch op.name {
	case "--volume":
		parts := strings.Split(op.value, ":")
		return len(parts) >= 2 && parts[1] == target
	case "--mount":
		for _, kv := range strings.Split(op.value, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if (k == "target" || k == "dst" || k == "destination") && v == target {
				return true
			}
		}
	}
	return false
}
