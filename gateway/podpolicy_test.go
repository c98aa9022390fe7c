package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/gateway/control"
)

func TestResolvePodPolicy(t *testing.T) {
	var asked []control.PodRef
	g := &Gateway{podPolicy: func(_ context.Context, p control.PodRef) (string, error) {
		asked = append(asked, p)
		switch p.Name {
		case "broken":
			return "", errors.New("api server unreachable")
		case "plain":
			return "", nil
		}
		return "agents/coder", nil
	}}
	pod := func(name string) *control.PodRef { return &control.PodRef{Namespace: "agents", Name: name} }
	for _, tc := range []struct {
		req     control.AttachRequest
		want    string
		wantErr string
	}{
		{control.AttachRequest{Pod: pod("a")}, "agents/coder", ""},
		{control.AttachRequest{Pod: pod("plain")}, "", ""},
		{control.AttachRequest{Pod: pod("broken")}, "", "policy of pod agents/broken: api server unreachable"},
		// A policy named in the request wins, except that the bare name
		// of the object the source names is that object; no pod: nothing
		// to ask.
		{control.AttachRequest{Pod: pod("a"), Policy: "strict"}, "strict", ""},
		{control.AttachRequest{Pod: pod("a"), Policy: "coder"}, "agents/coder", ""},
		{control.AttachRequest{Pod: pod("broken"), Policy: "coder"}, "coder", ""},
		{control.AttachRequest{}, "", ""},
		// A namespaced policy is its own namespace's pods' only.
		{control.AttachRequest{Pod: pod("a"), Policy: "agents/coder"}, "agents/coder", ""},
		{control.AttachRequest{Pod: pod("a"), Policy: "other/coder"}, "", `pod agents/a may run only under a policy of its own namespace, not "other/coder"`},
		{control.AttachRequest{Pod: pod("a"), Policy: "agentsx/coder"}, "", "own namespace"},
	} {
		got, err := g.resolvePodPolicy(context.Background(), tc.req)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: err = %v, want %q", tc.req, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Policy != tc.want {
			t.Errorf("%+v: policy %q, %v; want %q", tc.req, got.Policy, err, tc.want)
		}
	}
	if len(asked) != 6 {
		t.Errorf("asked %d times, want 6 (pods without a policy or with a bare name)", len(asked))
	}
	g.podPolicy = nil
	if got, err := g.resolvePodPolicy(context.Background(), control.AttachRequest{Pod: pod("a")}); err != nil || got.Policy != "" {
		t.Errorf("no source: %q, %v; want default", got.Policy, err)
	}
}

// TestAttachRefusedHook: an attach naming a pod that fails is reported
// with its error; one without a pod is not.
func TestAttachRefusedHook(t *testing.T) {
	g, _ := dnsTestGateway(t, flowTestPolicy, nil, noUpstream)
	var got []string
	g.refused = func(p control.PodRef, err error) { got = append(got, p.Namespace+"/"+p.Name+": "+err.Error()) }
	g.podPolicy = func(context.Context, control.PodRef) (string, error) { return "agents/missing", nil }
	_, err := g.Attach(context.Background(), control.AttachRequest{Netns: "/nonexistent", Pod: &control.PodRef{Namespace: "agents", Name: "a"}})
	if err == nil || len(got) != 1 || !strings.Contains(got[0], `agents/a: `) || !strings.Contains(got[0], `unknown policy "agents/missing"`) {
		t.Errorf("Attach = %v, hook saw %q; want one report of the unknown policy", err, got)
	}
	if _, err := g.Attach(context.Background(), control.AttachRequest{Netns: "/nonexistent"}); err == nil || len(got) != 1 {
		t.Errorf("Attach without a pod = %v, hook saw %d; want an error and no report", err, len(got))
	}
}
