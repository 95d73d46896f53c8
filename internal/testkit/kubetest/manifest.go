package kubetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// DaemonSet is the DaemonSet of manifests/petrel.yaml, decoded strictly.
func DaemonSet() (*appsv1.DaemonSet, error) {
	path := filepath.Join(RepoRoot(), "manifests", "petrel.yaml")
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no DaemonSet", path)
		}
		if err != nil {
			return nil, err
		}
		if bytes.Contains(doc, []byte("kind: DaemonSet")) {
			ds := &appsv1.DaemonSet{}
			if err := yaml.UnmarshalStrict(doc, ds); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return ds, nil
		}
	}
}
