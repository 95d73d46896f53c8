package standalone

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/petrelnet/petrel/internal/testkit/policycases"
	"github.com/petrelnet/petrel/policy"
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

// The benchmarks' synthetic cluster, written as YAML, reads back as the
// same input: what the combined benchmark's agent polices is what the
// policy benchmark compiles.
func TestSyntheticYAMLReadsBack(t *testing.T) {
	want := policycases.Synthetic(300, 30, netip.MustParseAddr("10.127.0.2"))
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := policycases.WriteSyntheticYAML(f, want); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var logs bytes.Buffer
	ns, pods, pols, _ := newPolicyDir(dir, slog.New(slog.NewTextHandler(&logs, nil))).load()
	if !strings.Contains(logs.String(), "namespaces=50 pods=300 policies=30") || strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("reading the YAML logged:\n%s", logs.String())
	}
	got := policy.Input{Namespaces: ns, Pods: pods, Policies: pols}
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Fatalf("read back (-written +read):\n%s", d)
	}
}

// Pods with the same labels share one map; the labels read back the same.
func TestPodsShareEqualLabels(t *testing.T) {
	dir := t.TempDir()
	doc := func(name, labels string) string {
		return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: web, labels: " + labels + "}\n" +
			"spec: {containers: [{name: c}]}\nstatus: {podIPs: [{ip: 10.244.1.5}]}\n"
	}
	yaml := doc("a", "{app: api, tier: x}") + doc("b", "{tier: x, app: api}") + doc("c", "{app: api}") + doc("d", "{app: api, tier: w}")
	if err := os.WriteFile(filepath.Join(dir, "pods.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	_, pods, _, _ := newPolicyDir(dir, slog.New(slog.NewTextHandler(io.Discard, nil))).load()
	if len(pods) != 4 {
		t.Fatalf("%d pods", len(pods))
	}
	same := func(i, j int) bool {
		return reflect.ValueOf(pods[i].Labels).Pointer() == reflect.ValueOf(pods[j].Labels).Pointer()
	}
	if !same(0, 1) || same(0, 2) || same(0, 3) || same(2, 3) {
		t.Errorf("label maps shared: a=b %v a=c %v a=d %v c=d %v; want only a=b", same(0, 1), same(0, 2), same(0, 3), same(2, 3))
	}
	want := []string{"map[app:api tier:x]", "map[app:api tier:x]", "map[app:api]", "map[app:api tier:w]"}
	for i, p := range pods {
		if got := fmt.Sprint(p.Labels); got != want[i] {
			t.Errorf("pod %s: labels %s, want %s", p.Name, got, want[i])
		}
	}
}

// The kind is read from an unindented "kind:" line when it can be, and by
// the YAML parser otherwise; either way the same objects come out.
func TestTopLevelKind(t *testing.T) {
	for _, c := range []struct {
		doc, kind string
		ok        bool
	}{
		{"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n", "Pod", true},
		{"kind: Namespace  \nmetadata: {name: x}\n", "Namespace", true},
		{"metadata:\n  kind: Pod\n", "", false},
		{"kind: \"Pod\"\n", "", false},
		{"kind: Pod # a comment\n", "", false},
		{"{\"kind\": \"Pod\"}\n", "", false},
	} {
		kind, ok := topLevelKind([]byte(c.doc))
		if kind != c.kind || ok != c.ok {
			t.Errorf("%q: %q %v, want %q %v", c.doc, kind, ok, c.kind, c.ok)
		}
	}
	dir := t.TempDir()
	docs := "kind: \"Namespace\"\napiVersion: v1\nmetadata: {name: x, labels: {tier: \"1\"}}\n---\n" +
		"{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"a\", \"namespace\": \"x\"}, \"status\": {\"podIPs\": [{\"ip\": \"10.244.1.5\"}]}}\n---\n" +
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n  namespace: x\n  labels: {app: \"yes\"}\nstatus:\n  podIPs: [{ip: 10.244.1.6}]\n"
	if err := os.WriteFile(filepath.Join(dir, "all.yaml"), []byte(docs), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := parseFile(filepath.Join(dir, "all.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.namespaces) != 1 || len(f.pods) != 2 || f.pods[1].Labels["app"] != "yes" {
		t.Fatalf("parsed %+v", f)
	}
}
