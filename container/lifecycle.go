package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// ImageExists reports whether the engine has the image ref locally.
func (c *Client) ImageExists(ctx context.Context, ref string) (bool, error) {
	var v struct {
		ID string `json:"Id"`
	}
	err := c.getJSON(ctx, "/images/"+url.PathEscape(ref)+"/json", nil, &v)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect image %q: %w", ref, err)
	}
	return true, nil
}

// ImportImage creates an image from a tar of a root filesystem (what
// `docker import` does) and returns its ID. It is given no name: engines
// disagree on what they would call it (Podman 4.3 drops the tag and files
// the rest under docker.io/library), so the caller names it with TagImage.
// changes are Dockerfile instructions applied to the image config, e.g.
// `ENTRYPOINT ["/clawnet","pause"]`. No registry is involved.
func (c *Client) ImportImage(ctx context.Context, rootfs io.Reader, changes ...string) (string, error) {
	q := url.Values{"fromSrc": {"-"}}
	for _, ch := range changes {
		q.Add("changes", ch)
	}
	resp, err := c.do(ctx, c.stream, http.MethodPost, "/images/create", q, rootfs, "application/x-tar")
	if err != nil {
		return "", fmt.Errorf("import image: %w", err)
	}
	defer resp.Body.Close()
	id, err := jsonMessages(resp.Body)
	if err != nil {
		return "", fmt.Errorf("import image: %w", err)
	}
	if id == "" {
		return "", errors.New("import image: the engine named no image ID")
	}
	return id, nil
}

// TagImage names the image id repo:tag. Give repo with its registry
// ("localhost/name"): Docker keeps a short name as it is, Podman's
// compatible API reads it as docker.io/library/name when creating a
// container, so only a full name means the same image on both.
func (c *Client) TagImage(ctx context.Context, id, repo, tag string) error {
	q := url.Values{"repo": {repo}, "tag": {tag}}
	if err := c.postJSON(ctx, "/images/"+url.PathEscape(id)+"/tag", q, nil, nil); err != nil {
		return fmt.Errorf("tag image %s as %s:%s: %w", shortID(strings.TrimPrefix(id, "sha256:")), repo, tag, err)
	}
	return nil
}

// ContainerSpec is the part of the create request clawnet uses.
type ContainerSpec struct {
	Image      string            `json:"Image"`
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	Hostname   string            `json:"Hostname,omitempty"`
	Domainname string            `json:"Domainname,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
	HostConfig HostConfig        `json:"HostConfig"`
}

// HostConfig is the part of the create request's HostConfig clawnet uses.
type HostConfig struct {
	NetworkMode string   `json:"NetworkMode"`
	DNS         []string `json:"Dns,omitempty"`
	DNSSearch   []string `json:"DnsSearch,omitempty"`
	DNSOptions  []string `json:"DnsOptions,omitempty"`
	ExtraHosts  []string `json:"ExtraHosts,omitempty"`
	Binds       []string `json:"Binds,omitempty"`
	CapDrop     []string `json:"CapDrop,omitempty"`
	SecurityOpt []string `json:"SecurityOpt,omitempty"`
	AutoRemove  bool     `json:"AutoRemove,omitempty"`
	Init        *bool    `json:"Init,omitempty"`
}

// CreateContainer creates a container named name (empty: the engine picks
// one) and returns its ID.
func (c *Client) CreateContainer(ctx context.Context, name string, spec ContainerSpec) (string, error) {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	var out struct {
		ID string `json:"Id"`
	}
	if err := c.postJSON(ctx, "/containers/create", q, spec, &out); err != nil {
		return "", fmt.Errorf("create container %q: %w", name, err)
	}
	if out.ID == "" {
		return "", fmt.Errorf("create container %q: engine returned no ID", name)
	}
	return out.ID, nil
}

// StartContainer starts a created container.
func (c *Client) StartContainer(ctx context.Context, id string) error {
	if err := c.postJSON(ctx, "/containers/"+url.PathEscape(id)+"/start", nil, nil, nil); err != nil {
		return fmt.Errorf("start container %s: %w", shortID(id), err)
	}
	return nil
}

// RemoveContainer removes a container, killing it first when force is set. A
// container that is already gone is not an error.
func (c *Client) RemoveContainer(ctx context.Context, id string, force bool) error {
	q := url.Values{"force": {strconv.FormatBool(force)}}
	resp, err := c.do(ctx, c.http, http.MethodDelete, "/containers/"+url.PathEscape(id), q, nil, "")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		// A removal already under way (AutoRemove, a concurrent rm) is as good.
		if strings.Contains(err.Error(), "already in progress") {
			return nil
		}
		return fmt.Errorf("remove container %s: %w", shortID(id), err)
	}
	resp.Body.Close()
	return nil
}

// ContainerSummary is one row of ListContainers.
type ContainerSummary struct {
	ID      string            `json:"Id"`
	Names   []string          `json:"Names"`
	State   string            `json:"State"`
	Created int64             `json:"Created"` // unix seconds
	Labels  map[string]string `json:"Labels"`
}

// ListContainers lists all containers (running or not) that carry the label
// key (any value when value is empty).
func (c *Client) ListContainers(ctx context.Context, key, value string) ([]ContainerSummary, error) {
	l := key
	if value != "" {
		l += "=" + value
	}
	f, err := json.Marshal(map[string][]string{"label": {l}})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []ContainerSummary
	if err := c.getJSON(ctx, "/containers/json", url.Values{"all": {"1"}, "filters": {string(f)}}, &out); err != nil {
		return nil, fmt.Errorf("list containers labelled %s: %w", l, err)
	}
	return out, nil
}

// ImageTags lists the local tags of repo ("repo:tag").
func (c *Client) ImageTags(ctx context.Context, repo string) ([]string, error) {
	f, err := json.Marshal(map[string][]string{"reference": {repo}})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []struct {
		RepoTags []string `json:"RepoTags"`
	}
	if err := c.getJSON(ctx, "/images/json", url.Values{"filters": {string(f)}}, &out); err != nil {
		return nil, fmt.Errorf("list images of %s: %w", repo, err)
	}
	var tags []string
	for _, im := range out {
		for _, t := range im.RepoTags {
			if strings.HasPrefix(t, repo+":") {
				tags = append(tags, t)
			}
		}
	}
	return tags, nil
}

// RemoveImage removes an image reference without force: an image a
// container still uses is refused (and that is not an error worth more
// than a return value).
func (c *Client) RemoveImage(ctx context.Context, ref string) error {
	resp, err := c.do(ctx, c.http, http.MethodDelete, "/images/"+url.PathEscape(ref), nil, nil, "")
	if err != nil {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	resp.Body.Close()
	return nil
}
