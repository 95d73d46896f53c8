package cni

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

func TestHostVethName(t *testing.T) {
	a := HostVethName("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0")
	if len(a) != 15 || !strings.HasPrefix(a, HostVethPrefix) {
		t.Fatalf("%q: want 15 characters starting %q", a, HostVethPrefix)
	}
	if a != HostVethName("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0") {
		t.Fatal("name not stable")
	}
	if a == HostVethName("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth1") {
		t.Fatal("two interfaces of one container share a host veth name")
	}
	mac := hostVethMAC("c", "eth0")
	if mac[0]&1 != 0 || mac[0]&2 == 0 {
		t.Fatalf("MAC %s is not locally administered unicast", mac)
	}
}

func TestAliasRoundTrip(t *testing.T) {
	net, id, ifName, ok := parseAlias(vethAlias("petrel", "abc:def", "eth0"))
	if !ok || net != "petrel" || id != "abc:def" || ifName != "eth0" {
		t.Fatalf("got %q %q %q %v", net, id, ifName, ok)
	}
	if _, _, _, ok := parseAlias("someone else's veth"); ok {
		t.Fatal("foreign alias parsed as Petrel's")
	}
}

func TestBuildResult(t *testing.T) {
	conf, cerr := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"petrel","ipam":{"ranges":["10.0.0.0/24"]},"dns":{"nameservers":["10.96.0.10"]}}`))
	if cerr != nil {
		t.Fatal(cerr)
	}
	hostMAC, _ := net.ParseMAC("02:00:00:00:00:01")
	podMAC, _ := net.ParseMAC("02:00:00:00:00:02")
	w := wired{hostName: "petrabc", hostMAC: hostMAC, podMAC: podMAC}
	args := &skel.CmdArgs{IfName: "eth0", Netns: "/var/run/netns/p"}
	r := buildResult(conf, args, w, []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")})
	b, _ := json.Marshal(r)
	want := `{"cniVersion":"1.1.0","dns":{"nameservers":["10.96.0.10"]},` +
		`"interfaces":[{"mac":"02:00:00:00:00:01","name":"petrabc"},{"mac":"02:00:00:00:00:02","name":"eth0","sandbox":"/var/run/netns/p"}],` +
		`"ips":[{"address":"10.0.0.2/32","gateway":"169.254.1.1","interface":1},{"address":"fd00::2/128","gateway":"fe80::1","interface":1}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"::/0","gw":"fe80::1"}]}`
	if string(b) != want {
		t.Fatalf("result\n got %s\nwant %s", b, want)
	}
	// A runtime speaking 0.4.0 gets the same result in its own version.
	old, err := r.GetAsVersion("0.4.0")
	if err != nil || old.Version() != "0.4.0" {
		t.Fatalf("convert to 0.4.0: %v", err)
	}
}

// The CNI spec puts no limit on a container ID; the kernel limits an alias
// to 255 bytes. A long ID is named by its hash, and GC still matches it.
func TestLongContainerIDAlias(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 20) // 320 characters
	a := vethAlias("petrel", id, "eth0")
	if len(a) > maxAlias {
		t.Fatalf("alias of %d bytes, the kernel takes %d", len(a), maxAlias)
	}
	network, got, ifName, ok := parseAlias(a)
	if !ok || network != "petrel" || ifName != "eth0" || got != aliasID(id) || !strings.HasPrefix(got, hashedID) {
		t.Fatalf("parsed %q %q %q %v", network, got, ifName, ok)
	}
	short := "abc123"
	if _, got, _, _ := parseAlias(vethAlias("petrel", short, "eth0")); got != short {
		t.Fatalf("a short ID is kept as it is: got %q", got)
	}
}
