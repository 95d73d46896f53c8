package cni_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/ipam"
)

func (n *node) allocations() []ipam.Allocation {
	n.t.Helper()
	s, err := ipam.Open(n.dataDir, time.Second)
	if err != nil {
		n.t.Fatal(err)
	}
	defer s.Close()
	as, err := s.List("")
	if err != nil {
		n.t.Fatal(err)
	}
	return as
}

func (n *node) assertClean() {
	n.t.Helper()
	if l := n.leftovers(); l != "" {
		n.t.Errorf("left behind in the node: %s", l)
	}
	if as := n.allocations(); len(as) != 0 {
		n.t.Errorf("allocations left: %v", as)
	}
}

func TestPodLifecycle(t *testing.T) {
	n := newNode(t)
	a, b := n.add("pod-a"), n.add("pod-b")
	if a.ip(false) == b.ip(false) || a.ip(true) == b.ip(true) {
		t.Fatalf("pods share an address: %v %v", a.res.IPs, b.res.IPs)
	}
	for _, v6 := range []bool{false, true} {
		ping(t, a.ns, b.ip(v6))
		ping(t, b.ns, a.ip(v6))
		ping(t, n.ns, a.ip(v6))
		ping(t, a.ns, map[bool]string{false: "10.99.0.1", true: "fd00:99::1"}[v6])
	}
	for _, p := range []*pod{a, b} {
		if err := n.check(p); err != nil {
			t.Fatalf("CHECK %s on a healthy pod: %v", p.id, err)
		}
	}
	for _, p := range []*pod{a, b} {
		n.del(p)
		n.del(p) // DEL is idempotent
	}
	n.assertClean()
}

func TestAddResultAndMTU(t *testing.T) {
	n := newNode(t)
	p := n.add("pod-mtu")
	if len(p.res.Interfaces) != 2 || p.res.Interfaces[1].Sandbox != p.ns.Path() {
		t.Fatalf("interfaces %+v, want host and pod with sandbox", p.res.Interfaces)
	}
	host := p.res.Interfaces[0].Name
	if host != cni.HostVethName("pod-mtu", "eth0") || len(host) > 15 {
		t.Fatalf("host veth %q not the derived name", host)
	}
	var mtus []int
	n.ns.Do(func() error {
		l, err := netlink.LinkByName(host)
		if err == nil {
			mtus = append(mtus, l.Attrs().MTU)
		}
		return err
	})
	p.ns.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			mtus = append(mtus, l.Attrs().MTU)
		}
		return err
	})
	if fmt.Sprint(mtus) != "[1450 1450]" {
		t.Fatalf("MTU host/pod %v, want 1450 on both ends", mtus)
	}
	// A repeated ADD for the same attachment returns the same addresses.
	out, err := n.run("ADD", "pod-mtu", p.ns.Path(), "eth0", n.conf())
	if err != nil || !strings.Contains(string(out), p.ip(false)+"/32") {
		t.Fatalf("repeated ADD: %v %s, want %s again", err, out, p.ip(false))
	}
	ping(t, n.ns, p.ip(false))
}

func TestCheckReportsDeletedRoute(t *testing.T) {
	n := newNode(t)
	p := n.add("pod-check")
	if out, err := n.ns.Run("ip", "route", "del", p.ip(false)+"/32"); err != nil {
		t.Fatalf("delete route: %v %s", err, out)
	}
	err := n.check(p)
	if err == nil {
		t.Fatal("CHECK passed with the pod route deleted")
	}
	if err.Code != cni.ErrCheckFailed || !strings.Contains(err.Msg, "host route "+p.ip(false)+"/32") {
		t.Fatalf("CHECK error %+v, want code %d naming the missing route", err, cni.ErrCheckFailed)
	}
	n.del(p)
	n.assertClean()
}

func TestFailedAddLeavesNothing(t *testing.T) {
	n := newNode(t, "10.244.9.0/30") // exactly one usable address
	held := n.add("holder")
	cases := []struct {
		name, ifName, netns string
		prepare             func(p string)
		code                uint
		msg                 string
	}{
		{name: "bad ifname", ifName: "eth0/x", code: 4, msg: "interface name"},
		{name: "ifname too long", ifName: "abcdefghijklmnop", code: 4, msg: "too long"},
		{name: "missing netns", ifName: "eth0", netns: "/var/run/netns/ptltest-does-not-exist", code: 3, msg: "does-not-exist"},
		{name: "range exhausted", ifName: "eth0", code: cni.ErrRangeExhausted, msg: "10.244.9.0/30"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			netns := c.netns
			if netns == "" {
				netns = newPodNS(t).Path()
			}
			_, err := n.run("ADD", "fail-"+strings.ReplaceAll(c.name, " ", "-"), netns, c.ifName, n.conf())
			if err == nil || err.Code != c.code || !strings.Contains(err.Msg+err.Details, c.msg) {
				t.Fatalf("ADD error %+v, want code %d mentioning %q", err, c.code, c.msg)
			}
		})
	}
	n.del(held)
	// The interface name is taken inside the pod: the address is allocated
	// and the veth created before the clash shows, so this exercises rollback.
	p := newPodNS(t)
	if out, err := p.Run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"); err != nil {
		t.Fatalf("taken eth0: %v %s", err, out)
	}
	if _, err := n.run("ADD", "clash", p.Path(), "eth0", n.conf()); err == nil || !strings.Contains(err.Msg, "eth0 already exists") {
		t.Fatalf("ADD into a pod with eth0 taken: %+v", err)
	}
	n.assertClean()
}

// A second Petrel interface in the same pod would need a second default
// route: it is refused with a clear error and the first one is untouched.
func TestSecondInterfaceRefused(t *testing.T) {
	n := newNode(t)
	first := n.add("first")
	if _, err := n.run("ADD", "first", first.ns.Path(), "eth1", n.conf()); err == nil || err.Code != 4 || !strings.Contains(err.Msg, "one interface per pod") {
		t.Fatalf("second interface in one pod: %+v", err)
	}
	ping(t, n.ns, first.ip(false))
	if err := n.check(first); err != nil {
		t.Fatalf("first interface damaged: %v", err)
	}
	n.del(first)
	n.assertClean()
}

func TestStatus(t *testing.T) {
	n := newNode(t, "10.244.9.0/30")
	if _, err := n.run("STATUS", "", "", "", n.conf()); err != nil {
		t.Fatalf("STATUS on an empty store: %v", err)
	}
	p := n.add("only")
	_, err := n.run("STATUS", "", "", "", n.conf())
	if err == nil || err.Code != 50 || !strings.Contains(err.Msg, "no free IPv4") {
		t.Fatalf("STATUS with the range full: %+v, want code 50 naming IPv4", err)
	}
	n.del(p)
	n.dataDir = "/proc/petrel-cannot-write-here"
	if _, err := n.run("STATUS", "", "", "", n.conf()); err == nil || err.Code != 50 {
		t.Fatalf("STATUS with an unusable data dir: %+v, want code 50", err)
	}
}

// TestLongContainerID: a container ID of any length the spec allows (here
// 320 characters; the veth alias holds 255) goes through ADD, CHECK, a GC
// that keeps it, a GC that does not, and DEL, leaving nothing.
func TestLongContainerID(t *testing.T) {
	n := newNode(t)
	id := strings.Repeat("0123456789abcdef", 20)
	p := n.add(id)
	ping(t, n.ns, p.ip(false))
	if err := n.check(p); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	gc := func(valid ...string) {
		t.Helper()
		c := map[string]any{}
		json.Unmarshal([]byte(n.conf()), &c)
		var list []map[string]string
		for _, v := range valid {
			list = append(list, map[string]string{"containerID": v, "ifname": "eth0"})
		}
		c["cni.dev/valid-attachments"] = list
		b, _ := json.Marshal(c)
		if _, err := n.run("GC", "", "", "", string(b)); err != nil {
			t.Fatalf("GC: %v", err)
		}
	}
	gc(id)
	if err := n.check(p); err != nil {
		t.Fatalf("GC keeping the long ID removed its attachment: %v", err)
	}
	gc()
	if l := n.leftovers(); l != "" {
		t.Fatalf("GC left the unlisted attachment: %s", l)
	}
	n.del(p)
	n.assertClean()
}
