package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// RestConfig is the admin's client config (through Dial, so it also
// reaches a server inside a namespace).
func (s *Server) RestConfig() *rest.Config {
	return &rest.Config{Host: s.URL, BearerToken: s.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, Dial: s.Dial,
		QPS: 1000, Burst: 1000} // tests are not rate limited
}

// KubeconfigAs writes a kubeconfig of the admin impersonating user (e.g.
// system:serviceaccount:NS:NAME), so a process using it has exactly that
// user's permissions.
func (s *Server) KubeconfigAs(user string) (string, error) {
	path := filepath.Join(s.dir, "kubeconfig-as-"+strings.NewReplacer(":", "_", "/", "_").Replace(user))
	body := s.kubeconfig(user)
	return path, os.WriteFile(path, []byte(body), 0o600)
}

// Apply server-side-applies every object of a multi-document YAML file, as
// `kubectl apply --server-side -f` does, and returns "Kind/name" of each.
func Apply(ctx context.Context, cfg *rest.Config, path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var done []string
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return done, nil
		} else if err != nil {
			return done, fmt.Errorf("%s: %w", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			mapper.Reset() // a CRD applied just before: discover again
			if m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				return done, fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
			}
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			r = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		data, _ := obj.MarshalJSON()
		force := true
		if _, err := r.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "petrel-test", Force: &force}); err != nil {
			return done, fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		done = append(done, gvk.Kind+"/"+obj.GetName())
	}
}

// ProxyConfig is kube-proxy's configuration file for a node: nftables
// mode, loopback health and metrics ports, and the machine-wide conntrack
// settings left alone.
func ProxyConfig(kubeconfig, nodeName, clusterCIDRs string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: %q}
hostnameOverride: %s
clusterCIDR: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, kubeconfig, nodeName, clusterCIDRs)
}
