package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/clawnet/clawnet/gateway/control"
)

// TestAPIPodPolicy: GET /v1/pods/NS/NAME/policy answers what
// Options.PodPolicy names ("" for a pod that is not an agent pod, and for
// every pod when there is no source), passes the UID along, and answers the
// source's error as one line, which clawnet-cni turns into a failed ADD,
// and reports it to AttachRefused (the pod's event).
func TestAPIPodPolicy(t *testing.T) {
	var asked []control.PodRef
	var refused []string
	g, _ := apiGateway(t, Options{AttachRefused: func(p control.PodRef, err error) {
		refused = append(refused, p.Namespace+"/"+p.Name+": "+err.Error())
	}, PodPolicy: func(_ context.Context, p control.PodRef) (string, error) {
		asked = append(asked, p)
		switch p.Name {
		case "broken":
			return "", errors.New("api server unreachable")
		case "web":
			return "", nil
		}
		return "coder", nil
	}})
	get := func(path string) (int, control.PodPolicy, string) {
		t.Helper()
		code, body := call(t, g, "GET", path, "")
		var p control.PodPolicy
		if code == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatalf("GET %s: %q is not a control.PodPolicy: %v", path, body, err)
			}
		}
		return code, p, body
	}
	if code, p, body := get("/v1/pods/agents/coder-1/policy?uid=u-1"); code != 200 || p != (control.PodPolicy{Namespace: "agents", Name: "coder-1", Policy: "coder"}) {
		t.Errorf("agent pod = %d %s; want 200 and policy coder", code, body)
	}
	if len(asked) != 1 || asked[0] != (control.PodRef{Namespace: "agents", Name: "coder-1", UID: "u-1"}) {
		t.Errorf("source asked %+v; want agents/coder-1 with its UID", asked)
	}
	if code, p, body := get("/v1/pods/default/web/policy"); code != 200 || p.Policy != "" || p.Name != "web" {
		t.Errorf("other pod = %d %s; want 200 and an empty policy", code, body)
	}
	code, body := call(t, g, "GET", "/v1/pods/agents/broken/policy", "")
	wantError(t, "a source that fails", code, body, http.StatusInternalServerError, "policy of pod agents/broken: api server unreachable")
	code, body = call(t, g, "GET", "/v1/pods/Agents/x/policy", "")
	wantError(t, "a namespace Kubernetes would refuse", code, body, http.StatusBadRequest, `pod "Agents"/"x"`)
	if len(refused) != 1 || refused[0] != "agents/broken: policy of pod agents/broken: api server unreachable" {
		t.Errorf("AttachRefused told %q; want the one failure of agents/broken", refused)
	}
	n := len(asked)
	if n != 3 {
		t.Errorf("source asked %d times; want 3 (never for a bad name)", n)
	}

	g2, _ := apiGateway(t, Options{})
	code, body = call(t, g2, "GET", "/v1/pods/agents/coder-1/policy", "")
	if code != 200 || body != `{"namespace":"agents","name":"coder-1","policy":""}`+"\n" {
		t.Errorf("no pod policy source = %d %q; want 200 and an empty policy", code, body)
	}
}
