// Package config is petrel-agent's configuration file: its schema (strict:
// an unknown key is an error), defaults and validation, and the session
// settings shared by the file's peers, BGPPeer objects and the node mesh.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/cni"
)

// Duration is a time.Duration written as "3s" in the config file.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"3s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("%s: a duration cannot be negative", s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Config is the standalone configuration file (petrel-agent --config).
type Config struct {
	NodeName          string       `json:"nodeName"`
	RouterID          string       `json:"routerID"`
	ASN               uint32       `json:"asn"`
	PodCIDRs          []string     `json:"podCIDRs"`
	ClusterCIDRs      []string     `json:"clusterCIDRs"`
	ImportExtras      []string     `json:"importExtras,omitempty"`
	ListenPort        int32        `json:"listenPort"`
	GRPCAddress       string       `json:"grpcAddress"`
	MetricsAddress    string       `json:"metricsAddress"`
	DataDir           string       `json:"dataDir"`
	CNIConfDir        string       `json:"cniConfDir"`
	MTU               int          `json:"mtu"`
	PortMap           *bool        `json:"portMap,omitempty"`
	CNIVersion        string       `json:"cniVersion,omitempty"`
	RouteReflector    bool         `json:"routeReflector,omitempty"`
	ServiceCIDRs      []string     `json:"serviceCIDRs,omitempty"`
	NoMasqueradeCIDRs []string     `json:"noMasqueradeCIDRs,omitempty"`
	Masquerade        *bool        `json:"masquerade,omitempty"`
	PolicyDir         string       `json:"policyDir,omitempty"`
	ResyncInterval    Duration     `json:"resyncInterval"`
	LogLevel          string       `json:"logLevel"`
	Peers             []PeerConfig `json:"peers"`
	// AllowUnsafe lifts the refusal of settings that are valid but
	// dangerous; each must be asked for by name.
	AllowUnsafe AllowUnsafe `json:"allowUnsafe"`
}

// AllowUnsafe names the dangerous settings a config may use.
type AllowUnsafe struct {
	// DefaultRoute allows a /0 in clusterCIDRs or importExtras: peers may
	// then steer every destination of this node, its default route too.
	DefaultRoute bool `json:"defaultRoute,omitempty"`
	// RoutableMetrics allows metricsAddress on an address other hosts
	// reach (the endpoint has no authentication).
	RoutableMetrics bool `json:"routableMetrics,omitempty"`
}

// PeerConfig is one entry of peers.
type PeerConfig struct {
	Address      string `json:"address"`
	ASN          uint32 `json:"asn"`
	Password     string `json:"password,omitempty"`
	LocalAddress string `json:"localAddress,omitempty"`
	PeerOptions
}

// PeerOptions are the session settings shared by the standalone peers
// entries, BGPPeer objects and the node mesh.
type PeerOptions struct {
	Port                 uint16          `json:"port,omitempty"`
	Multihop             uint8           `json:"multihop,omitempty"`
	HoldTime             Duration        `json:"holdTime,omitempty"`
	KeepaliveTime        Duration        `json:"keepaliveTime,omitempty"`
	ConnectRetry         Duration        `json:"connectRetry,omitempty"`
	BFD                  BFDConfig       `json:"bfd"`
	GracefulRestart      GracefulRestart `json:"gracefulRestart"`
	RouteReflectorClient bool            `json:"routeReflectorClient,omitempty"`
	MaxPrefixes          uint32          `json:"maxPrefixes,omitempty"`
	Advertise            Advertise       `json:"advertise"`
}

// Advertise limits what this node announces to a peer; both default to
// true.
type Advertise struct {
	// PodCIDRs: the node's pod CIDRs (and, from a route reflector, the
	// cluster's).
	PodCIDRs *bool `json:"podCIDRs,omitempty"`
	// Services: Service addresses (LoadBalancer, external, cluster IPs).
	Services *bool `json:"services,omitempty"`
}

// BFDConfig enables BFD on a peer.
type BFDConfig struct {
	Enabled    bool     `json:"enabled"`
	MinTx      Duration `json:"minTx,omitempty"`
	MinRx      Duration `json:"minRx,omitempty"`
	Multiplier uint8    `json:"multiplier,omitempty"`
}

// GracefulRestart configures RFC 4724 on a peer.
type GracefulRestart struct {
	Enabled     *bool    `json:"enabled,omitempty"`
	RestartTime Duration `json:"restartTime,omitempty"`
	HelperOnly  bool     `json:"helperOnly,omitempty"`
}

// DefaultGRPCAddress is where the GoBGP API listens unless grpcAddress says
// otherwise: a unix socket only root reaches.
const DefaultGRPCAddress = "unix:///var/run/petrel/gobgp.sock"

// DefaultASN is the AS of nodes without a label or configuration.
const DefaultASN = 64512

// Load reads, defaults and validates a config file. Unknown keys are
// errors: a misspelt key must not silently fall back to a default.
func Load(path string) (*Config, error) {
	c, err := read(path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadKubernetes reads the config for Kubernetes mode: the node-specific
// keys (nodeName, routerID, podCIDRs) come from the cluster and are
// checked once they are known; every other key is checked now.
func LoadKubernetes(path string) (*Config, error) {
	c, err := read(path)
	if err != nil {
		return nil, err
	}
	probe := *c
	probe.NodeName, probe.RouterID, probe.PodCIDRs = "probe", "192.0.2.1", nil
	for _, p := range c.ClusterCIDRs {
		if pr, err := netip.ParsePrefix(p); err == nil {
			probe.PodCIDRs = []string{pr.Masked().String()}
			break
		}
	}
	if probe.ASN == 0 {
		probe.ASN = DefaultASN
	}
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func read(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkKeys(b, reflect.TypeOf(c)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Defaults()
	return &c, nil
}

// Defaults fills what the file left out.
func (c *Config) Defaults() {
	if c.ListenPort == 0 {
		c.ListenPort = 179
	}
	if c.GRPCAddress == "" {
		c.GRPCAddress = DefaultGRPCAddress
	}
	if c.MetricsAddress == "" {
		c.MetricsAddress = "127.0.0.1:9465"
	}
	if c.DataDir == "" {
		c.DataDir = cni.DefaultDataDir
	}
	if c.CNIConfDir == "" {
		c.CNIConfDir = "/etc/cni/net.d"
	}
	if c.MTU == 0 {
		c.MTU = cni.DefaultMTU
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = Duration(30 * time.Second)
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.CNIVersion == "" {
		c.CNIVersion = cni.DefaultConfListVersion
	}
	if c.PortMap == nil {
		t := true
		c.PortMap = &t
	}
	if c.Masquerade == nil {
		t := true
		c.Masquerade = &t
	}
	for i := range c.Peers {
		c.Peers[i].PeerOptions.Defaults()
	}
}

// Defaults sets graceful restart on (120 s), BFD at 300 ms x 3 when enabled.
func (o *PeerOptions) Defaults() {
	gr := &o.GracefulRestart
	if gr.Enabled == nil {
		t := true
		gr.Enabled = &t
	}
	if gr.RestartTime == 0 {
		gr.RestartTime = Duration(120 * time.Second)
	}
	if b := &o.BFD; b.Enabled {
		b.MinTx = Or(b.MinTx, Duration(300*time.Millisecond))
		b.MinRx = Or(b.MinRx, Duration(300*time.Millisecond))
		if b.Multiplier == 0 {
			b.Multiplier = 3
		}
	}
}

// Or is d, or def when d is unset.
func Or(d, def Duration) Duration {
	if d == 0 {
		return def
	}
	return d
}

// Validate checks everything, and names each bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("nodeName: required"))
	}
	if _, err := c.BGP(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.BGPPeers(); err != nil {
		errs = append(errs, err)
	}
	if !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("dataDir: %q is not an absolute path", c.DataDir))
	}
	if !filepath.IsAbs(c.CNIConfDir) {
		errs = append(errs, fmt.Errorf("cniConfDir: %q is not an absolute path", c.CNIConfDir))
	}
	if c.CNIVersion != "1.0.0" && c.CNIVersion != "1.1.0" {
		errs = append(errs, fmt.Errorf("cniVersion: %q: want 1.0.0 (every runtime) or 1.1.0 (STATUS and GC; containerd 2.x, CRI-O with libcni 1.2+)", c.CNIVersion))
	}
	if c.MTU < 1280 || c.MTU > 65535 {
		errs = append(errs, fmt.Errorf("mtu: %d out of range 1280-65535", c.MTU))
	}
	if _, err := c.NoMasquerade(); err != nil {
		errs = append(errs, err)
	}
	if ap, err := netip.ParseAddrPort(c.MetricsAddress); err != nil {
		errs = append(errs, fmt.Errorf("metricsAddress: %q: want host:port, e.g. 127.0.0.1:9465", c.MetricsAddress))
	} else if !ap.Addr().IsLoopback() && !c.AllowUnsafe.RoutableMetrics {
		errs = append(errs, fmt.Errorf("metricsAddress: %s is reachable from other hosts and has no authentication; use a loopback address, or set allowUnsafe.routableMetrics", c.MetricsAddress))
	}
	errs = append(errs, c.checkWide())
	if c.PolicyDir != "" && !filepath.IsAbs(c.PolicyDir) {
		errs = append(errs, fmt.Errorf("policyDir: %q is not an absolute path", c.PolicyDir))
	}
	if c.ResyncInterval < Duration(time.Second) {
		errs = append(errs, fmt.Errorf("resyncInterval: %s is below 1s", time.Duration(c.ResyncInterval)))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func parsePrefixes(field string, ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err == nil && p.Masked() != p {
			err = fmt.Errorf("host bits set (did you mean %s?)", p.Masked())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %q: %w", field, i, s, err))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// BGP is the speaker's configuration.
func (c *Config) BGP() (bgp.Config, error) {
	pods, err1 := parsePrefixes("podCIDRs", c.PodCIDRs)
	cluster, err2 := parsePrefixes("clusterCIDRs", c.ClusterCIDRs)
	extras, err3 := parsePrefixes("importExtras", c.ImportExtras)
	rid, err4 := netip.ParseAddr(c.RouterID)
	if err4 != nil {
		err4 = fmt.Errorf("routerID: %q: %w", c.RouterID, err4)
	}
	if len(c.PodCIDRs) == 0 {
		err1 = errors.Join(err1, errors.New("podCIDRs: at least one is required"))
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return bgp.Config{}, err
	}
	out := bgp.Config{ASN: c.ASN, RouterID: rid, ListenPort: c.ListenPort, GRPCAddress: c.GRPCAddress,
		PodCIDRs: pods, ClusterCIDRs: cluster, ImportExtras: extras, RouteReflector: c.RouteReflector}
	return out, out.Validate()
}

// checkWide refuses a /0 where peers' routes are accepted, unless
// allowUnsafe.defaultRoute says so.
func (c *Config) checkWide() error {
	if c.AllowUnsafe.DefaultRoute {
		return nil
	}
	var errs []error
	for field, list := range map[string][]string{"clusterCIDRs": c.ClusterCIDRs, "importExtras": c.ImportExtras} {
		for i, s := range list {
			if p, err := netip.ParsePrefix(s); err == nil && p.Bits() == 0 {
				errs = append(errs, fmt.Errorf("%s[%d]: %s lets any peer route every destination of this node, its default route too; set allowUnsafe.defaultRoute to mean it", field, i, s))
			}
		}
	}
	return errors.Join(errs...)
}

// NoMasquerade is every destination pods reach with their own address:
// the cluster, the services and the configured extras.
func (c *Config) NoMasquerade() ([]netip.Prefix, error) {
	cluster, err1 := parsePrefixes("clusterCIDRs", c.ClusterCIDRs)
	svc, err2 := parsePrefixes("serviceCIDRs", c.ServiceCIDRs)
	extra, err3 := parsePrefixes("noMasqueradeCIDRs", c.NoMasqueradeCIDRs)
	return append(append(cluster, svc...), extra...), errors.Join(err1, err2, err3)
}
