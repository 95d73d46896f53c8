package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/policycases"
)

// startDUT starts one device under test in ns, peering with the feeder at
// 10.98.0.1 from 10.98.0.2. It returns the PIDs whose memory counts.
//
// The agent's cluster CIDRs hold its own pod CIDR and the fed prefixes
// (other nodes' pods, as it were), never the feeder's address: a next hop
// inside the cluster CIDRs is refused.
//
// With pods > 0 the agent's pod CIDR is a /18 and its policy directory holds
// that many of its own pods and a tenth as many NetworkPolicies
// (policycases.Synthetic).
func startDUT(dut string, ns netnstest.NS, dir, agentBin, profile string, pods int) (func() []int, func(), error) {
	switch dut {
	case "petrel":
		podCIDR, policyDir := "10.127.0.0/24", ""
		if pods > 0 {
			podCIDR, policyDir = "10.127.0.0/18", "policyDir: "+filepath.Join(dir, "policies")
			if err := writePolicies(filepath.Join(dir, "policies"), pods); err != nil {
				return nil, nil, err
			}
		}
		conf := fmt.Sprintf(`nodeName: dut
routerID: 10.98.0.2
asn: 65001
podCIDRs: [%[2]s]
clusterCIDRs: [10.127.0.0/16, 10.128.0.0/9]
dataDir: %[1]s/data
cniConfDir: %[1]s/net.d
%[3]s
grpcAddress: unix://%[1]s/gobgp.sock
logLevel: warn
peers:
  - {address: 10.98.0.1, asn: 65000, holdTime: 9s, keepaliveTime: 3s, connectRetry: 1s, maxPrefixes: 1000000}
`, dir, podCIDR, policyDir)
		path := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, nil, err
		}
		args := []string{"--config", path}
		if profile != "" {
			args = append(args, "--cpuprofile", profile+".cpu", "--memprofile", profile+".heap")
		}
		p, err := labtest.StartProc(ns, filepath.Join(dir, "agent.log"), agentBin, args...)
		if err != nil {
			return nil, nil, err
		}
		// SIGTERM: the agent writes its profiles as it stops.
		return func() []int { return []int{p.Cmd.Process.Pid} }, func() { p.Signal(syscall.SIGTERM) }, nil
	case "frr":
		conf := "router bgp 65001\n bgp router-id 10.98.0.2\n no bgp ebgp-requires-policy\n" +
			" neighbor 10.98.0.1 remote-as 65000\n neighbor 10.98.0.1 timers connect 1\n!\n"
		f, err := labtest.StartFRR(ns, filepath.Join(dir, "frr"), conf)
		if err != nil {
			return nil, nil, err
		}
		return f.PIDs, f.Kill, nil
	case "bird":
		conf := `router id 10.98.0.2;
protocol device {}
protocol kernel { ipv4 { export all; import none; }; }
protocol bgp feeder {
	local 10.98.0.2 as 65001;
	neighbor 10.98.0.1 as 65000;
	ipv4 { import all; export none; };
}
`
		path := filepath.Join(dir, "bird.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, nil, err
		}
		p, err := labtest.StartProc(ns, filepath.Join(dir, "bird.log"), "bird", "-f", "-c", path,
			"-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
		if err != nil {
			return nil, nil, err
		}
		return func() []int { return []int{p.Cmd.Process.Pid} }, func() { p.Signal(syscall.SIGKILL) }, nil
	}
	return nil, nil, fmt.Errorf("unknown device under test %q", dut)
}

// writePolicies writes the synthetic cluster's pods (from 10.127.0.2) and
// policies into a policy directory.
func writePolicies(dir string, pods int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "cluster.yaml"))
	if err != nil {
		return err
	}
	defer f.Close()
	return policycases.WriteSyntheticYAML(f, policycases.Synthetic(pods, pods/10, netip.MustParseAddr("10.127.0.2")))
}
