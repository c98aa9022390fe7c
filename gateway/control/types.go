// Package control is the gateway's control API: HTTP+JSON on a root-only
// unix socket. It holds the wire types and the client the CLI uses, and
// imports nothing of the data path, so the CLI stays small.
package control

import "time"

// DefaultSocket is where clawnetd listens unless told otherwise.
const DefaultSocket = "/run/clawnet/clawnet.sock"

// SocketEnv overrides the socket path for the CLI and the daemon.
const SocketEnv = "CLAWNET_SOCKET"

// AttachRequest asks the gateway to attach an agent. Exactly one of
// Container, PID and Netns names the target.
type AttachRequest struct {
	Name      string `json:"name,omitempty"`
	Policy    string `json:"policy,omitempty"`
	Container string `json:"container,omitempty"`
	PID       int    `json:"pid,omitempty"`
	Netns     string `json:"netns,omitempty"`
	// Force attaches even when the namespace has interfaces besides lo.
	Force bool `json:"force,omitempty"`
	// Publish lists ports to publish on the host, as ParsePublish reads
	// them; the attach fails if one cannot be.
	Publish []string `json:"publish,omitempty"`
	// Interface names the TUN inside the namespace; empty means the
	// daemon's network.interface. A CNI runtime names the interface it
	// expects (CNI_IFNAME) and refuses a result without it. The answer's
	// Agent.Interface is the name the TUN got.
	Interface string `json:"interface,omitempty"`
	// Pod names the Kubernetes pod the target belongs to, when a CNI
	// plugin attaches it. With no Policy, the daemon asks its pod policy
	// source (the pod's clawnet.dev/policy annotation, then a namespace
	// default, through the API server) before falling back to
	// default_policy.
	Pod *PodRef `json:"pod,omitempty"`
	// SetupTimeout, a Go duration ("90s", "5m"), ends the agent's setup
	// phase that long after the attach: the daemon keeps the timer, so it
	// works after the CLI exits. Empty: the phase lasts until a
	// PhaseRequest. It applies only under a policy with setup rules.
	SetupTimeout string `json:"setup_timeout,omitempty"`
}

// Phases of an agent (see policy/README.md, Setup phase).
const (
	PhaseSetup = "setup"
	PhaseRun   = "run"
)

// PhaseRequest moves an agent to another phase. The only move is from
// setup to run.
type PhaseRequest struct {
	Phase string `json:"phase"`
}

// PhaseResult answers a PhaseRequest: the agent's phase now, and how many
// live flows the move revoked (those only a setup rule allowed).
type PhaseResult struct {
	Agent   string `json:"agent"`
	Phase   string `json:"phase"`
	Revoked int    `json:"revoked"`
}

// PodRef names a Kubernetes pod.
type PodRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
}

// Agent describes an attached agent.
type Agent struct {
	Name        string   `json:"name"`
	Target      string   `json:"target"`
	ContainerID string   `json:"container_id,omitempty"`
	PID         int      `json:"pid,omitempty"`
	Netns       string   `json:"netns"`
	Interface   string   `json:"interface"`
	Addresses   []string `json:"addresses"`
	Gateway     []string `json:"gateway"`
	Policy      string   `json:"policy"`
	// Phase is PhaseSetup while the policy's setup rules apply to the
	// agent, else PhaseRun; SetupUntil is when a setup timeout ends it.
	Phase      string     `json:"phase,omitempty"`
	SetupUntil *time.Time `json:"setup_until,omitempty"`
	Flows      int64      `json:"flows"`
	BytesUp    uint64     `json:"bytes_up"`
	BytesDown  uint64     `json:"bytes_down"`
	// BufferReserved is what the agent's live flows have reserved of its
	// buffer budget (limits.buffer_per_agent).
	BufferReserved int64 `json:"buffer_reserved"`
	// AttachedAt is since when the agent is attached: the time of its
	// attach, kept when a restart of clawnetd attaches it again (a
	// container's agent, attached again by the engine watcher, starts
	// anew).
	AttachedAt time.Time `json:"attached_at"`
	// Published are the agent's published ports, in their full form.
	Published []string `json:"published,omitempty"`
	// Notes are things the user should know about this attach (for example
	// how DNS was made to work).
	Notes []string `json:"notes,omitempty"`
}

// Status is the daemon's own health, used by operators and leak checks.
type Status struct {
	Version    string   `json:"version"`
	Agents     int      `json:"agents"`
	Flows      int64    `json:"flows"`
	Goroutines int      `json:"goroutines"`
	OpenFDs    int      `json:"open_fds"`
	Policies   []string `json:"policies"`
}

// ReloadResult answers a reload: the policies now in force, those the
// reload changed (added, removed or edited; a file rewritten with the same
// bytes changes nothing), and how many live flows each agent lost because
// its changed policy no longer allows them (agents that lost none are left
// out). A reload that refused a file still applied the others: its error
// answer carries this too.
type ReloadResult struct {
	Policies []string       `json:"policies"`
	Changed  []string       `json:"changed,omitempty"`
	Revoked  map[string]int `json:"revoked,omitempty"`
}

// Explanation answers `clawnet policy explain`.
type Explanation struct {
	Policy string `json:"policy"`
	Proto  string `json:"proto"`
	Host   string `json:"host,omitempty"`
	Port   uint16 `json:"port"`
	// From is the peer of an inbound question (agent:NAME, host, or an
	// address), empty for an outbound one.
	From    string `json:"from,omitempty"`
	Verdict string `json:"verdict"`
	Rule    string `json:"rule"`
	Reason  string `json:"reason"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// PodPolicy answers GET /v1/pods/{namespace}/{name}/policy: the policy the
// daemon's pod policy source (Kubernetes: the pod's clawnet.dev/policy
// annotation, then its namespace's default) names for the pod. An empty
// Policy means the pod is not an agent pod: clawnet-cni in chained mode
// leaves such a pod's network as the cluster's plugin made it. A daemon with
// no pod policy source answers empty for every pod.
type PodPolicy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Policy    string `json:"policy"`
}
