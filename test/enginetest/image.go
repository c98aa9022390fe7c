package enginetest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// ImageSpec is what goes into the test image besides busybox.
type ImageSpec struct {
	// Busybox is a statically linked busybox; its applets are linked in
	// /bin. Empty: /bin/busybox.
	Busybox string
	// Binaries are static programs copied to /usr/local/bin under their
	// base names.
	Binaries []string
}

// rootfs makes the test image's root filesystem: busybox with its applets
// linked in /bin, the binaries, /etc/passwd and /etc/group, and no
// /etc/resolv.conf (Docker gives a container one; Podman writes none for a
// container without network). It returns the tar, the same bytes for the same inputs,
// and a tag made of its content hash.
func rootfs(spec ImageSpec) (tarball []byte, tag string, err error) {
	bb := spec.Busybox
	if bb == "" {
		bb = "/bin/busybox"
	}
	files := map[string]string{"bin/busybox": bb}
	for _, b := range spec.Binaries {
		files["usr/local/bin/"+filepath.Base(b)] = b
	}
	for name, src := range files {
		if err := checkStatic(src); err != nil {
			return nil, "", fmt.Errorf("image file %s: %w", name, err)
		}
	}
	applets, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return nil, "", fmt.Errorf("%s --list: %w", bb, err)
	}
	var buf bytes.Buffer
	if err := writeRootfs(&buf, files, strings.Fields(string(applets))); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:])[:16], nil
}

// dockerImageRepo is the local repository of the test image in Docker.
const dockerImageRepo = "clawnet-test"

// buildDockerImage makes the root filesystem (rootfs), imports it with
// `docker import` as clawnet-test:<content hash> and tags it
// clawnet-test:latest too. An image with the same content is reused. It
// returns the content-hash reference. Test images of earlier contents are
// removed, so that changing the probe does not pile images up; one a
// container still uses stays.
func buildDockerImage(spec ImageSpec) (string, error) {
	tarball, tag, err := rootfs(spec)
	if err != nil {
		return "", err
	}
	ref := dockerImageRepo + ":" + tag
	if exec.Command("docker", "image", "inspect", ref).Run() != nil {
		cmd := exec.Command("docker", "import", "-", ref)
		cmd.Stdin = bytes.NewReader(tarball)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("docker import: %v: %s", err, out)
		}
	}
	if out, err := exec.Command("docker", "tag", ref, dockerImageRepo+":latest").CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker tag: %v: %s", err, out)
	}
	out, err := exec.Command("docker", "images", dockerImageRepo, "--format", "{{.Repository}}:{{.Tag}}").Output()
	if err == nil {
		for _, t := range strings.Fields(string(out)) {
			if t != ref && t != dockerImageRepo+":latest" {
				exec.Command("docker", "rmi", t).Run()
			}
		}
	}
	return ref, nil
}

// podmanImageRepo is the local repository of the test image in Podman,
// which files a short name under localhost/ anyway.
const podmanImageRepo = "localhost/clawnet-test"

// buildPodmanImage imports the root filesystem (rootfs) into the Podman
// service at url (unix://...) as localhost/clawnet-test:<content hash>,
// unless it is there already, and returns that reference. Test images of
// other contents are removed (one a container still uses stays).
func buildPodmanImage(url string, spec ImageSpec) (string, error) {
	tarball, tag, err := rootfs(spec)
	if err != nil {
		return "", err
	}
	ref := podmanImageRepo + ":" + tag
	if exec.Command("podman", "--url", url, "image", "exists", ref).Run() == nil {
		return ref, nil
	}
	cmd := exec.Command("podman", "--url", url, "import", "--quiet", "-", ref)
	cmd.Stdin = bytes.NewReader(tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("podman import into %s: %v: %s", url, err, out)
	}
	out, err := exec.Command("podman", "--url", url, "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference="+podmanImageRepo).Output()
	if err == nil {
		for _, t := range strings.Fields(string(out)) {
			if t != ref {
				exec.Command("podman", "--url", url, "rmi", t).Run()
			}
		}
	}
	return ref, nil
}

// writeRootfs writes a deterministic tar: same inputs, same bytes, so the
// content hash finds the image of an earlier run.
func writeRootfs(w io.Writer, files map[string]string, applets []string) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "usr", "usr/local", "usr/local/bin", "root"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: epoch}); err != nil {
			return err
		}
	}
	etc := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for _, name := range sortedKeys(etc) {
		if err := writeFile(tw, name, 0o644, []byte(etc[name])); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(files) {
		b, err := os.ReadFile(files[name])
		if err != nil {
			return err
		}
		if err := writeFile(tw, name, 0o755, b); err != nil {
			return err
		}
	}
	sort.Strings(applets)
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: epoch}); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeFile(tw *tar.Writer, name string, mode int64, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// checkStatic refuses a dynamically linked file: the image has no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the test image has no libc", path)
		}
	}
	return nil
}

// Probe builds the probe program (static) once per process and returns its
// path. Like the image, it is a cache that outlives the run: one fixed file
// under the temp dir, replaced atomically, so nothing accumulates.
func Probe() (string, error) {
	probeOnce.Do(func() {
		probePath, probeErr = buildStatic("./test/docker/probe", "probe")
	})
	return probePath, probeErr
}

var (
	probeOnce sync.Once
	probePath string
	probeErr  error
)

func buildStatic(pkg, name string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), "clawnet-docker-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build %s: %v: %s", pkg, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return out, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the clawnet module")
	}
	return filepath.Dir(gomod), nil
}
