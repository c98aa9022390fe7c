package cnitest

import (
	"archive/tar"
	"bytes"
	"os"
	"testing"
	"time"
)

// Nothing can be pulled here: the tier's agent image is made from the
// host's busybox (Debian's busybox-static).
const agentImage = "localhost/clawnet-test/busybox:latest"

// busyboxApplets are the commands the tests run inside an agent.
var busyboxApplets = []string{"sh", "ip", "cat", "echo", "printf", "sleep", "nc", "nslookup", "true"}

// entry is one file of an image layer.
type entry struct {
	name string
	mode int64
	body []byte
	link string // a symlink's target
	dir  bool
}

// agentLayer is the agent image's only layer: busybox and its applets.
func agentLayer(t *testing.T) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("the agent image needs /bin/busybox (busybox-static): %v", err)
	}
	es := []entry{{name: "bin", dir: true}, {name: "etc", dir: true}, {name: "tmp", dir: true}, {name: "proc", dir: true},
		{name: "sys", dir: true}, {name: "dev", dir: true}, {name: "bin/busybox", mode: 0o755, body: bb}}
	for _, a := range busyboxApplets {
		es = append(es, entry{name: "bin/" + a, link: "busybox"})
	}
	return layer(t, es)
}

// layer writes es as an uncompressed tar owned by root.
func layer(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		switch {
		case e.dir:
			h.Name, h.Mode, h.Typeflag, h.Size = e.name+"/", 0o755, tar.TypeDir, 0
		case e.link != "":
			h.Mode, h.Typeflag, h.Linkname, h.Size = 0o777, tar.TypeSymlink, e.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
