package cni

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
)

// The sysctls are written through /proc/sys, which shows the network
// namespace of the thread that opens it: the plugin's own (the host's).

func writeSysctl(path, value string) error {
	if cur, err := os.ReadFile(path); err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil // writing even the same value to */forwarding resets interface state
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", path, value, err)
	}
	return nil
}

// proxyARP makes the host veth answer the pod's ARP for the IPv4 gateway at
// once; the default proxy_delay holds the first answer up to 0.8 s.
func proxyARP(ifName string) error {
	if err := writeSysctl("/proc/sys/net/ipv4/conf/"+ifName+"/proxy_arp", "1"); err != nil {
		return err
	}
	return writeSysctl("/proc/sys/net/ipv4/neigh/"+ifName+"/proxy_delay", "0")
}

// enableForwarding turns on routing in the host namespace for the families
// the pod uses: without it pods reach their node but nothing beyond.
func enableForwarding(addrs []netip.Addr) error {
	for _, a := range addrs {
		p := "/proc/sys/net/ipv6/conf/all/forwarding"
		if a.Is4() {
			p = "/proc/sys/net/ipv4/ip_forward"
		}
		if err := writeSysctl(p, "1"); err != nil {
			return err
		}
	}
	return nil
}
