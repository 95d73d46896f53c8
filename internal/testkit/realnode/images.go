package realnode

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// NetcheckImage is the test pods' image (test/node/images/netcheck).
const NetcheckImage = "petrel.test/netcheck:1"

// BuildImages builds the sandbox and test-pod images from
// test/node/images into OCI archives in dir, with the tool `make image`
// uses, and returns their paths and the netcheck binary (for lab pods,
// which run it directly).
func BuildImages(repo, dir string) (archives []string, netcheck string, err error) {
	for _, img := range []struct{ src, tag string }{{"pause", PauseImage}, {"netcheck", NetcheckImage}} {
		bin := filepath.Join(dir, img.src)
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "./test/node/images/"+img.src)
		build.Dir, build.Env = repo, append(build.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("build %s: %v %s", img.src, err, out)
		}
		archive := filepath.Join(dir, img.src+".tar")
		mk := exec.Command("go", "run", "./internal/tools/mkimage", "-tag", img.tag, "-out", archive,
			"-entrypoint", "/"+img.src, "-add", "/"+img.src+"="+bin+":0755")
		mk.Dir = repo
		if out, err := mk.CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("image %s: %v %s", img.tag, err, out)
		}
		archives = append(archives, archive)
	}
	return archives, filepath.Join(dir, "netcheck"), nil
}
