package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/clawnet/clawnet/gateway/control"
)

// defaultDataDir holds one record per attachment, as the reference IPAM
// plugins keep theirs under /var/lib/cni.
const defaultDataDir = "/var/lib/cni/clawnet"

// netConf is the plugin's entry in a network configuration list, as the
// runtime hands it on stdin (with name, cniVersion and, on DEL and CHECK,
// prevResult added).
type netConf struct {
	types.PluginConf
	// Socket is clawnetd's control socket on this node.
	Socket string `json:"socket,omitempty"`
	// Policy is the policy every pod of this network is attached under;
	// empty means the daemon's default_policy.
	Policy string `json:"policy,omitempty"`
	// DataDir holds the plugin's attachment records.
	DataDir string `json:"dataDir,omitempty"`
	// Chained runs the plugin after the cluster's own plugin (prevResult
	// set): a pod that opts in has the interfaces that plugin made in its
	// namespace removed and only the TUN put there; any other pod's
	// prevResult passes through untouched.
	Chained bool `json:"chained,omitempty"`
	// RuntimeConfig is what the runtime fills in for the capabilities the
	// configuration declares.
	RuntimeConfig struct {
		// PodAnnotations are the pod's annotations, passed by runtimes
		// that know the capability io.kubernetes.cri.pod-annotations
		// when the configuration declares it.
		PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
	} `json:"runtimeConfig"`
}

// policyAnnotation names a pod's policy; in chained mode it also opts the
// pod in.
const policyAnnotation = "clawnet.dev/policy"

// podAnnotation returns the pod's clawnet.dev/policy annotation as the
// runtime passed it; ok is false when the pod has none (or the runtime
// passes no annotations).
func (c *netConf) podAnnotation() (policy string, ok bool, err error) {
	policy, ok = c.RuntimeConfig.PodAnnotations[policyAnnotation]
	if ok && (policy == "" || strings.TrimSpace(policy) != policy) {
		return "", false, fmt.Errorf("pod annotation %s: %q is not a policy name", policyAnnotation, policy)
	}
	return policy, ok, nil
}

// knownKeys are the keys a configuration may carry: the plugin's own and
// those the CNI spec and its runtimes put there. Any other key is an error:
// a misspelt "policy" must not attach pods under the default policy.
var knownKeys = []string{
	// the plugin's
	"socket", "policy", "dataDir", "chained",
	// the spec's plugin object
	"cniVersion", "name", "type", "capabilities", "ipam", "dns",
	// added by runtimes
	"prevResult", "runtimeConfig", "args", "cni.dev/valid-attachments",
}

// parseConf reads a plugin configuration strictly and fills in defaults.
func parseConf(data []byte) (*netConf, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(data, &keys); err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	for k := range keys {
		if !slices.Contains(knownKeys, k) {
			return nil, fmt.Errorf("network configuration: unknown key %q (clawnet-cni reads socket, policy, dataDir and chained)", k)
		}
	}
	conf := &netConf{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(conf); err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	// The name is part of the records' paths.
	if err := utils.ValidateNetworkName(conf.Name); err != nil {
		return nil, fmt.Errorf("network configuration: name %q: %s", conf.Name, err.Msg)
	}
	if conf.Socket == "" {
		conf.Socket = control.DefaultSocket
	}
	if !filepath.IsAbs(conf.Socket) {
		return nil, fmt.Errorf("network configuration: socket %q is not an absolute path", conf.Socket)
	}
	if conf.DataDir == "" {
		conf.DataDir = defaultDataDir
	}
	if !filepath.IsAbs(conf.DataDir) {
		return nil, fmt.Errorf("network configuration: dataDir %q is not an absolute path", conf.DataDir)
	}
	if strings.TrimSpace(conf.Policy) != conf.Policy {
		return nil, fmt.Errorf("network configuration: policy %q has surrounding spaces", conf.Policy)
	}
	if conf.Chained && conf.Policy != "" {
		return nil, fmt.Errorf("network configuration: policy %q with chained: in chained mode a pod's policy comes from its %s annotation or from clawnetd, never from the network", conf.Policy, policyAnnotation)
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, fmt.Errorf("network configuration: prevResult: %w", err)
	}
	return conf, nil
}
