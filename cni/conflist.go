package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/petrelnet/petrel/internal/atomicfile"
)

// ConfListFile is the file the agent writes into the CNI config directory.
const ConfListFile = "10-petrel.conflist"

// DefaultConfListVersion is the version every supported runtime and the
// reference plugins from 1.0 on understand.
const DefaultConfListVersion = "1.0.0"

// ConfList is what the agent knows that the plugin needs: the node's pod
// CIDRs and where the store lives. The plugin reads nothing else, so it
// keeps working while the agent is down.
type ConfList struct {
	Name string // network name; "petrel" when empty
	// CNIVersion of the list; DefaultConfListVersion when empty. 1.1.0
	// gives the runtime STATUS and GC, but runtimes with a libcni older
	// than 1.2 (containerd 1.6 and 1.7) cannot read a 1.1.0 result and
	// fail every pod.
	CNIVersion string
	MTU        int
	Ranges     []netip.Prefix
	DataDir    string
	PortMap    bool // chain the reference portmap plugin for hostPort
}

type confListJSON struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type pluginJSON struct {
	Type string   `json:"type"`
	MTU  int      `json:"mtu,omitempty"`
	IPAM IPAMConf `json:"ipam"`
}

type portMapJSON struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
}

// Render returns the conflist's bytes: json.Marshal of a struct, never a
// text template, so no value can break the syntax.
func (c ConfList) Render() ([]byte, error) {
	if len(c.Ranges) == 0 {
		return nil, fmt.Errorf("conflist: no pod CIDRs")
	}
	name := c.Name
	if name == "" {
		name = PluginType
	}
	p := pluginJSON{Type: PluginType, MTU: c.MTU, IPAM: IPAMConf{Type: PluginType, DataDir: c.DataDir}}
	for _, r := range c.Ranges {
		p.IPAM.Ranges = append(p.IPAM.Ranges, r.String())
	}
	version := c.CNIVersion
	if version == "" {
		version = DefaultConfListVersion
	}
	l := confListJSON{CNIVersion: version, Name: name, Plugins: []any{p}}
	if c.PortMap {
		l.Plugins = append(l.Plugins, portMapJSON{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}})
	}
	b, err := json.MarshalIndent(l, "", "  ")
	return append(b, '\n'), err
}

// WriteConfList writes the conflist into dir atomically (temp file, fsync,
// rename), and only when its content changed: the runtime watches the
// directory and must never see a half-written file. It reports whether it
// wrote.
func WriteConfList(dir string, c ConfList) (bool, error) {
	b, err := c.Render()
	if err != nil {
		return false, err
	}
	path := filepath.Join(dir, ConfListFile)
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("cni config dir %s: %w", dir, err)
	}
	if err := atomicfile.Write(path, bytes.NewReader(b), 0o644); err != nil {
		return false, err
	}
	return true, nil
}
