package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// maxName is the longest agent name clawnetd accepts
// (^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$).
const maxName = 63

// podArgs are the CNI_ARGS a Kubernetes runtime passes (containerd's CRI
// passes all four; podman passes only K8S_POD_NAME, the container's or the
// kube-play pod's name).
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

// parsePodArgs reads CNI_ARGS; unknown keys are errors unless the runtime
// said IgnoreUnknown=1, as the spec's conventions want.
func parsePodArgs(s string) (podArgs, error) {
	var a podArgs
	if err := types.LoadArgs(s, &a); err != nil {
		return podArgs{}, fmt.Errorf("CNI_ARGS: %w", err)
	}
	return a, nil
}

// agentName is the agent a container is attached as: NAMESPACE_POD when the
// runtime names a Kubernetes pod ('_' never occurs in either, so the join is
// unambiguous), the pod (or podman container) name alone without a
// namespace, else the first 12 characters of the container ID. The name is
// for people and policies to read; the container ID stays the key of the
// attachment, so two sandboxes of one pod never mix their records.
func agentName(a podArgs, containerID string) string {
	ns, pod := string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME)
	switch {
	case pod != "" && ns != "":
		return boundName(ns + "_" + pod)
	case pod != "":
		return boundName(pod)
	default:
		return boundName(containerID[:min(12, len(containerID))])
	}
}

// validName is what clawnetd accepts as an agent name.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// hashLen is how many hex digits of a hash end a name that had to change.
const hashLen = 8

// boundName makes s a valid agent name. A valid name is kept as it is. Any
// other has each refused character turned into '-' (with an 'x' before a
// first character that is not a letter or digit), is cut to leave room, and
// ends with '-' and a hash of s, so two changed names differ when their
// inputs did.
func boundName(s string) string {
	if validName.MatchString(s) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if i == 0 && !alnum {
			b.WriteByte('x')
		}
		if alnum || r == '_' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		b.WriteByte('x')
	}
	head := b.String()
	if len(head) > maxName-1-hashLen {
		head = head[:maxName-1-hashLen]
	}
	sum := sha256.Sum256([]byte(s))
	return head + "-" + hex.EncodeToString(sum[:])[:hashLen]
}
