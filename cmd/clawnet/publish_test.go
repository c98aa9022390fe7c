package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/gateway/control"
)

func TestPublishCLI(t *testing.T) {
	d := startFakeDaemon(t)
	code, out, stderr := runCLI(t, "publish", "a1", "18789:18789", "[::1]:5353:53/udp")
	if code != exitOK || out != "published 127.0.0.1:18789:18789/tcp on agent a1\npublished [::1]:5353:53/udp on agent a1\n" {
		t.Errorf("clawnet publish = %d %q %q", code, out, stderr)
	}
	code, out, stderr = runCLI(t, "unpublish", "a1", "18789:18789")
	if code != exitOK || out != "unpublished 127.0.0.1:18789:18789/tcp on agent a1\n" {
		t.Errorf("clawnet unpublish = %d %q %q", code, out, stderr)
	}
	want := []string{
		`POST /v1/agents/a1/publish {"publish":["127.0.0.1:18789:18789/tcp","[::1]:5353:53/udp"]}`,
		`DELETE /v1/agents/a1/publish {"publish":["127.0.0.1:18789:18789/tcp"]}`,
	}
	if got := d.requests(); !slices.Equal(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	d.refusal = "publish 127.0.0.1:18789:18789/tcp: port 18789 on 127.0.0.1 is already taken"
	code, out, stderr = runCLI(t, "publish", "a1", "18789:18789")
	if code != exitError || out != "" || stderr != "clawnet: "+d.refusal+"\n" {
		t.Errorf("clawnet publish of a taken port = %d %q %q; want exit 1 and the daemon's line", code, out, stderr)
	}
}

func TestAttachPublish(t *testing.T) {
	d := startFakeDaemon(t)
	d.answer = control.Agent{Name: "gw", Target: "container:gw", Policy: "gw", Interface: "clawnet0",
		Addresses: []string{"100.96.0.2/16"}, Gateway: []string{"100.96.0.1"},
		Published: []string{"127.0.0.1:18789:18789/tcp", "0.0.0.0:9000:9000/udp"}}
	code, out, stderr := runCLI(t, "attach", "gw", "-p", "18789:18789", "--publish=0.0.0.0:9000:9000/udp")
	if code != exitOK || !strings.HasSuffix(out, " published=127.0.0.1:18789:18789/tcp,0.0.0.0:9000:9000/udp\n") {
		t.Errorf("clawnet attach -p = %d %q %q; want the published ports on the attach line", code, out, stderr)
	}
	want := `POST /v1/agents {"container":"gw","publish":["127.0.0.1:18789:18789/tcp","0.0.0.0:9000:9000/udp"]}`
	if got := d.requests(); len(got) != 1 || got[0] != want {
		t.Errorf("requests = %q; want [%s]", got, want)
	}
}

func TestLsPublished(t *testing.T) {
	d := startFakeDaemon(t)
	d.agents = []control.Agent{
		{Name: "gw", Target: "container:gw", Policy: "gw", Published: []string{"127.0.0.1:18789:18789/tcp", "127.0.0.1:9000:9000/udp"}},
		{Name: "cli", Target: "pid:7", Policy: "cli"},
	}
	code, out, _ := runCLI(t, "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 3 || !strings.HasSuffix(lines[0], "PUBLISHED") ||
		!strings.HasSuffix(lines[1], " 127.0.0.1:18789:18789/tcp,127.0.0.1:9000:9000/udp") || !strings.HasSuffix(lines[2], " -") {
		t.Errorf("clawnet ls = %d\n%s\nwant a PUBLISHED column, - for none", code, out)
	}
	code, out, _ = runCLI(t, "ls", "--json")
	if code != exitOK || !strings.Contains(out, `"published": [`) {
		t.Errorf("clawnet ls --json = %d %s; want the published ports", code, out)
	}
}
