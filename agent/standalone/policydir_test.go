package standalone

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: web}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: http}, {protocol: UDP, port: 53, endPort: 60}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: web, labels: {app: api}}
spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
status: {podIPs: [{ip: 10.244.1.5}, {ip: "fd00::5"}]}
`

func TestPolicyDirKeepsLastGoodVersion(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	p := newPolicyDir(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	path := filepath.Join(dir, "web.yaml")
	os.WriteFile(path, []byte(goodPolicy), 0o644)
	_, pods, pols, changed := p.load()
	if !changed || len(pods) != 1 || len(pols) != 1 {
		t.Fatalf("load: changed %v, %d pods, %d policies", changed, len(pods), len(pols))
	}
	pol := pols[0]
	if !pol.Ingress || pol.Egress || pol.IngressRules[0].Ports[0].Name != "http" || pol.IngressRules[0].Ports[1].EndPort != 60 {
		t.Fatalf("policy translated wrong: %+v", pol)
	}
	if pods[0].Ports[0].Port != 8080 || len(pods[0].IPs) != 2 {
		t.Fatalf("pod translated wrong: %+v", pods[0])
	}
	if _, _, _, changed := p.load(); changed {
		t.Fatal("an unchanged directory reported a change")
	}
	// The file breaks: reported by name, the last good version stays.
	os.WriteFile(path, []byte("kind: NetworkPolicy\nspec: [broken\n"), 0o644)
	_, pods, pols, _ = p.load()
	if len(pods) != 1 || len(pols) != 1 || !strings.Contains(logs.String(), "web.yaml") {
		t.Fatalf("broken file: %d pods, %d policies, logs %q", len(pods), len(pols), logs.String())
	}
	// A document of an unknown kind or with an unknown field fails its file.
	os.WriteFile(filepath.Join(dir, "svc.yaml"), []byte("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "typo.yaml"), []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, lables: {a: b}}\n"), 0o644)
	ns, _, _, _ := p.load()
	if len(ns) != 0 || !strings.Contains(logs.String(), "svc.yaml") || !strings.Contains(logs.String(), "typo.yaml") {
		t.Fatalf("bad files not refused by name: %v\n%s", ns, logs.String())
	}
	// The file is removed: its objects go.
	os.Remove(path)
	if _, pods, pols, changed := p.load(); !changed || len(pods)+len(pols) != 0 {
		t.Fatalf("after removal: %d pods %d policies", len(pods), len(pols))
	}
}
