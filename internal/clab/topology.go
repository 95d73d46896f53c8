// Package clab reads containerlab topology files and runs their kind:linux
// nodes without a container runtime: each node is a network namespace with
// a private mount namespace held by a small process, links are veth pairs,
// binds are bind mounts, and cmd/exec run inside both namespaces. The same
// files stay valid for real containerlab (runner-only hints go in labels).
package clab

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Topology is the subset of containerlab's schema the runner executes.
// Unknown keys are errors, as they are for containerlab.
type Topology struct {
	Name     string `json:"name"`
	Prefix   string `json:"prefix,omitempty"`
	Topology struct {
		Defaults Node            `json:"defaults,omitempty"`
		Kinds    map[string]Node `json:"kinds,omitempty"`
		Nodes    map[string]Node `json:"nodes"`
		Links    []Link          `json:"links,omitempty"`
	} `json:"topology"`
}

// Node is a kind:linux node.
type Node struct {
	Kind    string            `json:"kind,omitempty"`
	Image   string            `json:"image,omitempty"`
	Cmd     string            `json:"cmd,omitempty"`
	Exec    []string          `json:"exec,omitempty"`
	Binds   []string          `json:"binds,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// Link joins two node interfaces.
type Link struct {
	Endpoints []string `json:"endpoints"`
}

// Runner-only hints, in a node's labels.
const (
	// LabelTmpfs lists paths (comma-separated) that get a private tmpfs.
	LabelTmpfs = "petrel.dev/tmpfs"
	// LabelOwner is "user:group" for those tmpfs mounts (e.g. frr:frr).
	LabelOwner = "petrel.dev/tmpfs-owner"
)

// Load reads and checks a topology file.
func Load(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t Topology
	if err := yaml.UnmarshalStrict(b, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &t, nil
}

// Resolved returns a node with defaults and its kind's settings applied.
func (t *Topology) Resolved(name string) Node {
	n := t.Topology.Nodes[name]
	if n.Kind == "" {
		n.Kind = t.Topology.Defaults.Kind
	}
	k := t.Topology.Kinds[n.Kind]
	if n.Image == "" {
		n.Image = k.Image
	}
	if n.Cmd == "" {
		n.Cmd = k.Cmd
	}
	return n
}

// NodeNames lists the nodes in a stable order.
func (t *Topology) NodeNames() []string {
	names := make([]string, 0, len(t.Topology.Nodes))
	for n := range t.Topology.Nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (t *Topology) validate() error {
	var errs []error
	if t.Name == "" {
		errs = append(errs, errors.New("name: required"))
	}
	if len(t.Topology.Nodes) == 0 {
		errs = append(errs, errors.New("topology.nodes: at least one node"))
	}
	for _, name := range t.NodeNames() {
		if k := t.Resolved(name).Kind; k != "linux" {
			errs = append(errs, fmt.Errorf("topology.nodes.%s.kind: %q, the runner executes only linux nodes", name, k))
		}
		if len(name) > 20 || strings.ContainsAny(name, " /:") {
			errs = append(errs, fmt.Errorf("topology.nodes.%s: name must be short and without spaces, slashes or colons", name))
		}
	}
	for i, l := range t.Topology.Links {
		if len(l.Endpoints) != 2 {
			errs = append(errs, fmt.Errorf("topology.links[%d]: want two endpoints", i))
			continue
		}
		for _, ep := range l.Endpoints {
			node, ifName, ok := strings.Cut(ep, ":")
			if _, known := t.Topology.Nodes[node]; !ok || !known || ifName == "" || len(ifName) > 15 {
				errs = append(errs, fmt.Errorf("topology.links[%d]: endpoint %q is not node:interface of a known node", i, ep))
			}
		}
	}
	return errors.Join(errs...)
}
