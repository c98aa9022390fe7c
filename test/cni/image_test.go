package cnitest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Nothing can be pulled here: the tier's images are made from files on the
// host, an agent image with busybox (Debian's busybox-static) and, for
// containerd, a pause image with a static Go program.
const (
	agentImage = "localhost/clawnet-test/busybox:latest"
	pauseImage = "localhost/clawnet-test/pause:3.10"
)

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

// pauseLayer is the pause image's layer: the program in ./pause, which
// waits for SIGTERM or SIGINT.
func pauseLayer(t *testing.T) []byte {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	goBuild(t, "./test/cni/pause", bin)
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return layer(t, []entry{{name: "pause", mode: 0o755, body: b}})
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

// ociArchive writes an OCI image layout archive holding one image, name,
// made of layerTar and running cmd: what `ctr images import` and
// `podman load` read.
func ociArchive(t *testing.T, name string, layerTar []byte, cmd []string, out string) {
	t.Helper()
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		blobs[d] = b
		return "sha256:" + d, len(b)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layerTar)
	zw.Close()
	diffSum := sha256.Sum256(layerTar)
	layerDigest, layerSize := put(gz.Bytes())
	config := mustJSON(t, map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": cmd, "Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffSum[:])}},
	})
	configDigest, configSize := put(config)
	manifest := mustJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := put(manifest)
	index := mustJSON(t, map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"annotations": map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name[strings.LastIndex(name, ":")+1:]},
		}},
	})
	es := []entry{
		{name: "oci-layout", mode: 0o644, body: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "index.json", mode: 0o644, body: index},
		{name: "blobs", dir: true}, {name: "blobs/sha256", dir: true},
	}
	for d, b := range blobs {
		es = append(es, entry{name: "blobs/sha256/" + d, mode: 0o644, body: b})
	}
	if err := os.WriteFile(out, layer(t, es), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
