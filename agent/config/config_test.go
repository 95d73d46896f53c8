package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExample(t *testing.T) {
	c, err := Load("testdata/node1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	peers, err := c.BGPPeers()
	if err != nil || len(peers) != 1 {
		t.Fatalf("peers %v %v", peers, err)
	}
	p := peers[0]
	if p.HoldTime != 3*time.Second || p.Keepalive != time.Second || !p.GracefulRestart.Enabled || p.RestartTime != 120*time.Second {
		t.Fatalf("peer %+v", p)
	}
	if *c.PortMap != true || c.MTU != 1500 || time.Duration(c.ResyncInterval) != 30*time.Second {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestLoadNamesTheBadField(t *testing.T) {
	good, _ := os.ReadFile("testdata/node1.yaml")
	cases := map[string]struct{ from, to string }{
		"nodeName":      {"nodeName: node1", "nodeName: \"\""},
		"routerID":      {"routerID: 10.99.1.2", "routerID: banana"},
		"podCIDRs[1]":   {"fd00:10:244:1::/64]", "fd00:10:244:1::1/64]"},
		"clusterCIDRs":  {"clusterCIDRs: [10.244.0.0/16, fd00:10:244::/48]", "clusterCIDRs: [10.245.0.0/16, fd00:10:244::/48]"},
		"grpcAddress":   {"grpcAddress: 127.0.0.1:50051", "grpcAddress: 0.0.0.0:50051"},
		"peers[0]":      {"address: 10.99.1.1", "address: 10.99.1"},
		"keepaliveTime": {"keepaliveTime: 1s", "keepaliveTime: 2s"},
		"holdTim":       {"holdTime: 3s", "holdTim: 3s"}, // unknown key
		"dataDir":       {"dataDir: /var/lib/petrel", "dataDir: var/lib/petrel"},
		"connectRetry":  {"connectRetry: 1s", "connectRetry: soon"},
		"listenPort":    {"listenPort: 179", "listenPort: 99999"},
		// Keys are matched exactly: a near miss is named, never applied.
		"did you mean podCIDRs":       {"podCIDRs:", "podCidrs:"},
		"is also peers[0]":            {"peers:\n", "peers:\n  - {address: 10.99.1.1, asn: 65001}\n"},
		"own routerID":                {"address: 10.99.1.1", "address: 10.99.1.2"},
		"negative":                    {"bfd: {enabled: false}", "bfd: {enabled: true, minTx: -1s}"},
		"bfd.minRx":                   {"bfd: {enabled: false}", "bfd: {enabled: true, minRx: 1ms}"},
		"more than a third":           {"holdTime: 3s, keepaliveTime: 1s", "keepaliveTime: 100s"},
		"AS_TRANS":                    {"asn: 65101", "asn: 23456"},
		"allowUnsafe.defaultRoute":    {"clusterCIDRs: [10.244.0.0/16,", "clusterCIDRs: [0.0.0.0/0, 10.244.0.0/16,"},
		"importExtras[0]":             {"listenPort: 179", "listenPort: 179\nimportExtras: [0.0.0.0/0]"},
		"allowUnsafe.routableMetrics": {"listenPort: 179", "listenPort: 179\nmetricsAddress: 0.0.0.0:9465"},
	}
	for field, c := range cases {
		t.Run(field, func(t *testing.T) {
			bad := strings.Replace(string(good), c.from, c.to, 1)
			if bad == string(good) {
				t.Fatalf("test case does not change the file")
			}
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(bad), 0o644)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), field) {
				t.Fatalf("got %v, want an error naming %s", err, field)
			}
		})
	}
}

// The dangerous settings load when asked for by name.
func TestAllowUnsafe(t *testing.T) {
	good, _ := os.ReadFile("testdata/node1.yaml")
	conf := strings.Replace(string(good), "listenPort: 179", "listenPort: 179\nimportExtras: [0.0.0.0/0]\nmetricsAddress: 0.0.0.0:9465\nallowUnsafe: {defaultRoute: true, routableMetrics: true}", 1)
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(conf), 0o644)
	if _, err := Load(path); err != nil {
		t.Fatalf("with allowUnsafe: %v", err)
	}
}
