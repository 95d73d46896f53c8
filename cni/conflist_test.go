package cni

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestWriteConfList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	c := ConfList{MTU: 1450, DataDir: "/var/lib/petrel", PortMap: true,
		Ranges: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}}
	wrote, err := WriteConfList(dir, c)
	if err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	if wrote, err := WriteConfList(dir, c); err != nil || wrote {
		t.Fatalf("unchanged content rewritten: %v %v", wrote, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files, want only the conflist", len(entries))
	}

	// The runtime's own loader accepts it, and the plugin accepts its entry
	// the way the runtime hands it over (name and cniVersion injected).
	list, err := libcni.ConfListFromFile(filepath.Join(dir, ConfListFile))
	if err != nil {
		t.Fatalf("libcni rejects the conflist: %v", err)
	}
	if list.Name != "petrel" || len(list.Plugins) != 2 || list.Plugins[1].Network.Type != "portmap" {
		t.Fatalf("conflist %+v", list)
	}
	var entry map[string]any
	json.Unmarshal(list.Plugins[0].Bytes, &entry)
	entry["name"], entry["cniVersion"] = list.Name, list.CNIVersion
	b, _ := json.Marshal(entry)
	conf, cerr := ParseConfig(b)
	if cerr != nil {
		t.Fatalf("plugin rejects the agent's conflist: %v", cerr)
	}
	if conf.MTU != 1450 || len(conf.Ranges) != 2 || conf.Ranges[1].String() != "fd00:10:244:1::/64" {
		t.Fatalf("parsed %+v", conf)
	}

	c.Ranges = c.Ranges[:1]
	if wrote, err := WriteConfList(dir, c); err != nil || !wrote {
		t.Fatalf("changed content not written: %v %v", wrote, err)
	}
	if _, err := WriteConfList(dir, ConfList{}); err == nil {
		t.Fatal("a conflist with no pod CIDRs was written")
	}
}
