package container

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Info is what clawnet needs to know about one container.
type Info struct {
	ID    string
	Name  string // without Docker's leading "/"
	Image string // the reference it was created from (Config.Image)
	// Running is true while the container's process runs (a paused container
	// still counts: its namespace exists).
	Running bool
	Status  string // created, running, paused, restarting, exited, dead
	Pid     int    // host PID of the container's init process, 0 when not running
	// StartedAt changes on every start: with Pid it tells a restarted
	// container (new namespace) from one seen again.
	StartedAt string
	// NetworkMode is HostConfig.NetworkMode: none, bridge, default, host,
	// container:ID, a network name, or Podman's slirp4netns/pasta/ns:PATH.
	NetworkMode string
	// Networks are the names of the networks the container is connected to,
	// sorted. A --network none container has only "none" (or none at all
	// under Podman).
	Networks       []string
	Labels         map[string]string
	ResolvConfPath string // host path of the container's resolv.conf, if the engine manages one
}

type inspectJSON struct {
	ID     string `json:"Id"`
	Name   string `json:"Name"`
	Config struct {
		Image  string            `json:"Image"`
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	State struct {
		Status    string `json:"Status"`
		Running   bool   `json:"Running"`
		Pid       int    `json:"Pid"`
		StartedAt string `json:"StartedAt"`
	} `json:"State"`
	HostConfig struct {
		NetworkMode string `json:"NetworkMode"`
	} `json:"HostConfig"`
	NetworkSettings struct {
		Networks map[string]any `json:"Networks"`
	} `json:"NetworkSettings"`
	ResolvConfPath string `json:"ResolvConfPath"`
}

// Inspect returns what the engine knows about the container nameOrID. The
// error for an unknown container reads `container "foo" not found` and wraps
// ErrNotFound.
func (c *Client) Inspect(ctx context.Context, nameOrID string) (Info, error) {
	if nameOrID == "" {
		return Info{}, errors.New("container name or ID is empty")
	}
	var j inspectJSON
	err := c.getJSON(ctx, "/containers/"+url.PathEscape(nameOrID)+"/json", nil, &j)
	if errors.Is(err, ErrNotFound) {
		return Info{}, fmt.Errorf("container %q %w", nameOrID, ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("inspect container %q: %w", nameOrID, err)
	}
	info := Info{
		ID:             j.ID,
		Name:           strings.TrimPrefix(j.Name, "/"),
		Image:          j.Config.Image,
		Running:        j.State.Running,
		Status:         j.State.Status,
		Pid:            j.State.Pid,
		StartedAt:      j.State.StartedAt,
		NetworkMode:    j.HostConfig.NetworkMode,
		Labels:         j.Config.Labels,
		ResolvConfPath: j.ResolvConfPath,
	}
	for n := range j.NetworkSettings.Networks {
		info.Networks = append(info.Networks, n)
	}
	sort.Strings(info.Networks)
	if !info.Running {
		info.Pid = 0
	}
	return info, nil
}

// Sentinels for why a container cannot be attached; callers branch on them.
var (
	ErrNotRunning   = errors.New("is not running")
	ErrOtherNetwork = errors.New("has another network")
)

// CheckAttachable says whether clawnet may attach the container: it must be
// running and have no network but its loopback (--network none), because
// clawnet's TUN must be the agent's only way out. The error is one line that
// tells a person what to do instead.
func CheckAttachable(info Info) error {
	name := info.Name
	if name == "" {
		name = shortID(info.ID)
	}
	if err := checkNetwork(name, info); err != nil {
		return err
	}
	if !info.Running || info.Pid <= 0 {
		return fmt.Errorf("container %q %w (status %s): start it first", name, ErrNotRunning, orUnknown(info.Status))
	}
	return nil
}

func checkNetwork(name string, info Info) error {
	mode := info.NetworkMode
	switch {
	case mode == "host":
		return refusal("container %q uses the host network: run it with --network none (or use clawnet run)", name)
	case strings.HasPrefix(mode, "container:"):
		return refusal("container %q shares the network of container %q: attach that container instead", name, strings.TrimPrefix(mode, "container:"))
	case strings.HasPrefix(mode, "ns:"):
		p := strings.TrimPrefix(mode, "ns:")
		return refusal("container %q joins network namespace %s: attach it with --netns %s", name, p, p)
	case mode != "none" && mode != "":
		if mode == "default" {
			mode = "bridge"
		}
		return refusal("container %q uses network %q: run it with --network none (or use clawnet run)", name, mode)
	}
	// NetworkMode none, yet connected later (docker network connect).
	for _, n := range info.Networks {
		if n != "none" {
			return refusal("container %q uses network %q: run it with --network none (or use clawnet run)", name, n)
		}
	}
	return nil
}

// refusal is an ErrOtherNetwork whose text is exactly the one-line advice.
func refusal(format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: ErrOtherNetwork}
}

// kindError prints its own message and matches its sentinel with errors.Is.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
