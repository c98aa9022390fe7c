// Package podmantest runs clawnet against a real Podman, rootful and
// rootless, through its Docker-compatible API: the same end-to-end checks as
// test/docker (attach by name, allowed and denied flows seen by the canary,
// `clawnet run` with the gateway on its first instruction, restart and
// removal followed), plus what Podman does differently: an image without
// /etc/resolv.conf (Podman writes none for a --network none container), a
// read-only root, and a rootless user's containers. The tests run only when
// CLAWNET_PODMAN_TESTS=1 (make podman-test, which starts the services with
// scripts/podman-setup.sh and points DOCKER_HOST at the rootful one).
package podmantest

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"

	dockertest "github.com/clawnet/clawnet/test/docker"
)

// ImageRepo is the local repository of the test image; Podman files a
// short name under localhost/ anyway.
const ImageRepo = "localhost/clawnet-test"

// BuildImage imports test/docker's root filesystem (busybox, the probe, no
// /etc/resolv.conf) into the Podman service at url (unix://...) as
// ImageRepo:<content hash>, unless it is there already, and returns that
// reference. Test images of other contents are removed (one a container
// still uses stays). No registry is involved.
func BuildImage(url string, spec dockertest.ImageSpec) (string, error) {
	tarball, tag, err := dockertest.Rootfs(spec)
	if err != nil {
		return "", err
	}
	ref := ImageRepo + ":" + tag
	if exec.Command("podman", "--url", url, "image", "exists", ref).Run() == nil {
		return ref, nil
	}
	cmd := exec.Command("podman", "--url", url, "import", "--quiet", "-", ref)
	cmd.Stdin = bytes.NewReader(tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("podman import into %s: %v: %s", url, err, out)
	}
	out, err := exec.Command("podman", "--url", url, "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference="+ImageRepo).Output()
	if err == nil {
		for _, t := range strings.Fields(string(out)) {
			if t != ref {
				exec.Command("podman", "--url", url, "rmi", t).Run()
			}
		}
	}
	return ref, nil
}
