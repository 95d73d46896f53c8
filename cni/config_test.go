package cni

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfigRejects(t *testing.T) {
	cases := []struct {
		name, conf string
		code       uint
		field      string
	}{
		{"not json", `{"name":`, types.ErrDecodingFailure, "decode"},
		{"no name", `{"type":"petrel","ipam":{"ranges":["10.0.0.0/24"]}}`, types.ErrInvalidNetworkConfig, "name:"},
		{"wrong type", `{"name":"n","type":"ptp","ipam":{"ranges":["10.0.0.0/24"]}}`, types.ErrInvalidNetworkConfig, "type:"},
		{"mtu too small", `{"name":"n","type":"petrel","mtu":100,"ipam":{"ranges":["10.0.0.0/24"]}}`, types.ErrInvalidNetworkConfig, "mtu:"},
		{"mtu too small for v6", `{"name":"n","type":"petrel","mtu":1000,"ipam":{"ranges":["fd00::/64"]}}`, types.ErrInvalidNetworkConfig, "IPv6 minimum"},
		{"no ranges", `{"name":"n","type":"petrel","ipam":{"type":"petrel"}}`, types.ErrInvalidNetworkConfig, "ipam.ranges:"},
		{"bad range", `{"name":"n","type":"petrel","ipam":{"ranges":["10.0.0.0/24","banana"]}}`, types.ErrInvalidNetworkConfig, "ipam.ranges[1]"},
		{"host bits", `{"name":"n","type":"petrel","ipam":{"ranges":["10.0.0.5/24"]}}`, types.ErrInvalidNetworkConfig, "host bits"},
		{"overlap", `{"name":"n","type":"petrel","ipam":{"ranges":["10.0.0.0/16","10.0.1.0/24"]}}`, types.ErrInvalidNetworkConfig, "overlaps ipam.ranges[0]"},
		{"relative dataDir", `{"name":"n","type":"petrel","ipam":{"ranges":["10.0.0.0/24"],"dataDir":"var/lib"}}`, types.ErrInvalidNetworkConfig, "ipam.dataDir"},
		{"bad lock timeout", `{"name":"n","type":"petrel","ipam":{"ranges":["10.0.0.0/24"],"lockTimeout":"soon"}}`, types.ErrInvalidNetworkConfig, "ipam.lockTimeout"},
		{"ranges wrong type", `{"name":"n","type":"petrel","ipam":{"ranges":"10.0.0.0/24"}}`, types.ErrDecodingFailure, "decode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.conf))
			if err == nil {
				t.Fatal("accepted")
			}
			if err.Code != c.code || !strings.Contains(err.Msg+" "+err.Details, c.field) {
				t.Fatalf("got code %d %q %q, want code %d naming %q", err.Code, err.Msg, err.Details, c.code, c.field)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"petrel","ipam":{"ranges":["10.0.0.0/24","fd00::/64"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != DefaultMTU || c.IPAM.DataDir != DefaultDataDir || c.LockTimeout != DefaultLockTimeout || c.Delegated() {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if len(c.Ranges) != 2 || c.Ranges[1].String() != "fd00::/64" {
		t.Fatalf("ranges %v", c.Ranges)
	}
	d, err := ParseConfig([]byte(`{"name":"n","type":"petrel","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`))
	if err != nil || !d.Delegated() {
		t.Fatalf("delegated IPAM config: %v %+v", err, d)
	}
}
