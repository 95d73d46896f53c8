// Package cni is Petrel's CNI plugin: point-to-point veth routing with a /32
// and /128 per pod, a link-local gateway, no bridge. It is self-contained: it
// reads its network config from stdin, allocates from the local IPAM store
// and never needs the agent to be running.
package cni

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/petrelnet/petrel/ipam"
)

// PluginType is the "type" of Petrel's plugin and of its in-process IPAM.
const PluginType = "petrel"

// Defaults for fields a config may leave out.
const (
	DefaultDataDir     = "/var/lib/petrel"
	DefaultMTU         = 1500
	DefaultLockTimeout = 10 * time.Second
)

// Gateways the pod routes through. They are link-local so they never collide
// with a pod or node address and need no configuration per node: the host
// answers for 169.254.1.1 by proxy ARP and owns fe80::1 on each host veth.
var (
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	GatewayV6 = netip.MustParseAddr("fe80::1")
)

// NetConf is one plugin entry of a conflist.
type NetConf struct {
	types.PluginConf
	MTU  int      `json:"mtu,omitempty"`
	IPAM IPAMConf `json:"ipam"`
}

// IPAMConf configures the in-process IPAM. With another Type the whole
// config is handed to that IPAM plugin instead, and only Type is read here.
type IPAMConf struct {
	Type        string   `json:"type,omitempty"`
	Ranges      []string `json:"ranges,omitempty"`
	DataDir     string   `json:"dataDir,omitempty"`
	LockTimeout string   `json:"lockTimeout,omitempty"`
}

// Config is a NetConf checked and parsed into the values the plugin uses.
type Config struct {
	NetConf
	Ranges      []ipam.Range
	LockTimeout time.Duration
}

// Delegated reports whether IPAM is another plugin.
func (c *Config) Delegated() bool { return c.IPAM.Type != PluginType }

// ParseConfig decodes and validates stdin. Errors are CNI errors naming the
// offending field.
func ParseConfig(stdin []byte) (*Config, *types.Error) {
	var n NetConf
	if err := json.Unmarshal(stdin, &n); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode network config", err.Error())
	}
	c := &Config{NetConf: n}
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network config", err.Error())
	}
	return c, nil
}

func (c *Config) defaults() {
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.IPAM.Type == "" {
		c.IPAM.Type = PluginType
	}
	if c.IPAM.DataDir == "" {
		c.IPAM.DataDir = DefaultDataDir
	}
	if c.IPAM.LockTimeout == "" {
		c.IPAM.LockTimeout = DefaultLockTimeout.String()
	}
}

func (c *Config) validate() error {
	if c.Name == "" {
		return fmt.Errorf("name: required")
	}
	if c.Type != PluginType {
		return fmt.Errorf("type: %q, want %q", c.Type, PluginType)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return fmt.Errorf("mtu: %d out of range 576-65535", c.MTU)
	}
	if c.Delegated() {
		return nil
	}
	if len(c.IPAM.Ranges) == 0 {
		return fmt.Errorf("ipam.ranges: at least one range is required")
	}
	if !filepath.IsAbs(c.IPAM.DataDir) {
		return fmt.Errorf("ipam.dataDir: %q is not an absolute path", c.IPAM.DataDir)
	}
	d, err := time.ParseDuration(c.IPAM.LockTimeout)
	if err != nil || d <= 0 {
		return fmt.Errorf("ipam.lockTimeout: %q is not a positive duration", c.IPAM.LockTimeout)
	}
	c.LockTimeout = d
	for i, s := range c.IPAM.Ranges {
		r, err := ipam.ParseRange(s)
		if err != nil {
			return fmt.Errorf("ipam.ranges[%d]: %w", i, err)
		}
		for j, prev := range c.Ranges {
			if prev.Prefix.Overlaps(r.Prefix) {
				return fmt.Errorf("ipam.ranges[%d]: %s overlaps ipam.ranges[%d] %s", i, r, j, prev)
			}
		}
		if !r.Is4() && c.MTU < 1280 {
			return fmt.Errorf("mtu: %d is below the IPv6 minimum 1280 for ipam.ranges[%d]", c.MTU, i)
		}
		c.Ranges = append(c.Ranges, r)
	}
	return nil
}
