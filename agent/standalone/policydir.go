package standalone

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/petrelnet/petrel/agent/translate"
	"github.com/petrelnet/petrel/internal/runner"
	"github.com/petrelnet/petrel/policy"
)

// policyDir is the standalone source of policy input: a directory of
// standard Kubernetes YAML (Namespace, Pod with labels, status.podIPs and
// container ports, NetworkPolicy). A file that does not parse is reported
// by name and ignored; the last good version of it stays in force.
type policyDir struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex
	files   map[string]parsedFile // by file name: last good parse
	lastErr string                // the directory's last read error, logged once
}

type parsedFile struct {
	stamp      string // size and mtime when parsed (or when it failed)
	namespaces []policy.Namespace
	pods       []policy.Pod
	policies   []policy.Policy
	labelSets  labelSets // while parsing
}

// labelSets gives the pods of a file with the same labels one map: the
// pods of a Deployment all carry the same, and at 10,000 pods a map each
// is 3 MB the agent keeps for nothing. Nothing writes to a pod's labels.
type labelSets map[string]map[string]string

func (s labelSets) intern(m map[string]string) map[string]string {
	if len(m) == 0 {
		return m
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	if have, ok := s[b.String()]; ok {
		return have
	}
	s[b.String()] = m
	return m
}

func newPolicyDir(dir string, log *slog.Logger) *policyDir {
	return &policyDir{dir: dir, log: log, files: map[string]parsedFile{}}
}

// load re-reads changed files and returns the union of every good file,
// and whether anything changed since the last load.
func (p *policyDir) load() (ns []policy.Namespace, pods []policy.Pod, pols []policy.Policy, changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	entries, err := os.ReadDir(p.dir)
	if msg := fmt.Sprint(err); err != nil && msg != p.lastErr {
		p.log.Error("policy directory unreadable; keeping the last good state", "dir", p.dir, "err", err)
		p.lastErr = msg
	} else if err == nil {
		p.lastErr = ""
	}
	seen := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !slices.Contains([]string{".yaml", ".yml", ".json"}, filepath.Ext(name)) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		seen[name] = true
		if old, ok := p.files[name]; ok && old.stamp == runner.Stamp(fi) {
			continue
		}
		changed = true
		parsed, err := parseFile(filepath.Join(p.dir, name))
		if err != nil {
			p.log.Error("policy file ignored", "file", name, "err", err)
			old := p.files[name]
			old.stamp = runner.Stamp(fi) // report once per version
			p.files[name] = old
			continue
		}
		parsed.stamp = runner.Stamp(fi)
		p.files[name] = parsed
		p.log.Info("policy file loaded", "file", name, "namespaces", len(parsed.namespaces), "pods", len(parsed.pods), "policies", len(parsed.policies))
	}
	if err == nil {
		for name := range p.files {
			if !seen[name] {
				delete(p.files, name)
				changed = true
			}
		}
	}
	names := make([]string, 0, len(p.files))
	for n := range p.files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		f := p.files[n]
		ns, pods, pols = append(ns, f.namespaces...), append(pods, f.pods...), append(pols, f.policies...)
	}
	return ns, pods, pols, changed
}

func (p *policyDir) fingerprint() string {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			fmt.Fprintf(&b, "%s %s\n", e.Name(), runner.Stamp(fi))
		}
	}
	return b.String()
}

// parseFile reads every document of a file; any bad document fails the
// whole file, so a half-applied file never takes effect.
func parseFile(path string) (parsedFile, error) {
	out := parsedFile{labelSets: labelSets{}}
	f, err := os.Open(path)
	if err != nil {
		return out, err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			out.labelSets = nil
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		kind, ok := topLevelKind(doc)
		if !ok {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				return out, fmt.Errorf("document %d: %w", i, err)
			}
			kind = tm.Kind
		}
		if err := out.add(kind, doc); err != nil {
			return out, fmt.Errorf("document %d (%s): %w", i, kind, err)
		}
	}
}

// topLevelKind reads a block-style document's kind from its unindented
// "kind:" line, without parsing the document twice (10,000 pods' YAML
// took half a gigabyte of garbage to parse, half of it only for their
// kind). Anything else (flow style, JSON, a quoted or commented value) is
// left to the YAML parser. The strict decode of the whole document checks
// the kind again.
func topLevelKind(doc []byte) (string, bool) {
	for line := range bytes.Lines(doc) {
		rest, ok := bytes.CutPrefix(line, []byte("kind:"))
		if !ok {
			continue
		}
		v := string(bytes.TrimSpace(rest))
		if v == "" || strings.ContainsAny(v, "\"'#{}[]&*!|>%@`") {
			return "", false
		}
		return v, true
	}
	return "", false
}

func (f *parsedFile) add(kind string, doc []byte) error {
	switch kind {
	case "Namespace":
		var ns corev1.Namespace
		if err := yaml.UnmarshalStrict(doc, &ns); err != nil {
			return err
		}
		if ns.Kind != kind {
			return fmt.Errorf("kind %q read as %q", ns.Kind, kind)
		}
		f.namespaces = append(f.namespaces, translate.Namespace(&ns))
	case "Pod":
		var pod corev1.Pod
		if err := yaml.UnmarshalStrict(doc, &pod); err != nil {
			return err
		}
		if pod.Kind != kind {
			return fmt.Errorf("kind %q read as %q", pod.Kind, kind)
		}
		if pod.Namespace == "" {
			pod.Namespace = "default"
		}
		pod.Labels = f.labelSets.intern(pod.Labels)
		f.pods = append(f.pods, translate.Pod(&pod))
	case "NetworkPolicy":
		var np netv1.NetworkPolicy
		if err := yaml.UnmarshalStrict(doc, &np); err != nil {
			return err
		}
		if np.Kind != kind {
			return fmt.Errorf("kind %q read as %q", np.Kind, kind)
		}
		if np.Namespace == "" {
			np.Namespace = "default"
		}
		pol, err := translate.NetworkPolicy(&np)
		if err != nil {
			return err
		}
		f.policies = append(f.policies, pol)
	default:
		return fmt.Errorf("kind %q: want Namespace, Pod or NetworkPolicy", kind)
	}
	return nil
}
