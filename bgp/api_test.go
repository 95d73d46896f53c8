package bgp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// TestAPIIsRootOnlyAndHidesPasswords is the unprivileged local user's view
// of the GoBGP API: the stock gobgp CLI run as uid 65534 cannot connect to
// the socket, while root's sees the neighbor but never its MD5 password. A
// socket left by a killed agent is replaced; anything else at the path is
// refused, not deleted.
func TestAPIIsRootOnlyAndHidesPasswords(t *testing.T) {
	netnstest.RequireRoot(t)
	cli := netnstest.RequireTool(t, "gobgp")
	base, err := os.MkdirTemp("", "petrel-api")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	// Everyone may traverse base and run the CLI copied into it: only
	// Petrel's own locks stand between uid 65534 and the socket.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	gobgp := filepath.Join(base, "gobgp")
	if b, err := os.ReadFile(cli); err != nil || os.WriteFile(gobgp, b, 0o755) != nil {
		t.Fatalf("copy gobgp: %v", err)
	}
	sock := filepath.Join(base, "run", "gobgp.sock")

	cfg := Config{ASN: 64512, RouterID: netip.MustParseAddr("127.0.0.31"), ListenPort: -1, GRPCAddress: "unix://" + sock,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sp, err := New(ctx, cfg, testLogger(), Notify{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	peer := Peer{Address: netip.MustParseAddr("127.0.0.32"), ASN: 65000, Password: "s3cret-md5", ConnectRetry: time.Hour}
	if _, err := sp.Set(ctx, []Peer{peer}, Adverts{}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{filepath.Dir(sock): 0o700 | os.ModeDir, sock: 0o600 | os.ModeSocket} {
		if fi, err := os.Stat(path); err != nil || fi.Mode()&(os.ModeType|os.ModePerm) != want {
			t.Fatalf("%s: mode %v (%v), want %v", path, fi.Mode(), err, want)
		}
	}

	root, err := exec.Command(gobgp, "--target", "unix://"+sock, "neighbor", "127.0.0.32", "-j").CombinedOutput()
	if err != nil || !strings.Contains(string(root), "127.0.0.32") {
		t.Fatalf("root's gobgp neighbor: %v %s", err, root)
	}
	if strings.Contains(string(root), "s3cret") {
		t.Fatalf("the API shows the session password: %s", root)
	}

	nobody := exec.Command(gobgp, "--target", "unix://"+sock, "neighbor")
	nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := nobody.CombinedOutput()
	if _, ran := err.(*exec.ExitError); !ran || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("uid 65534 ran gobgp: %v\n%s\nwant a refused connection", err, out)
	}
	sp.Stop()

	// A socket left by a killed agent, in a directory that existed (its
	// mode is not Petrel's to change): replaced, and locked again.
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(shared, "gobgp.sock")
	staleSocket(t, stale)
	cfg.GRPCAddress = "unix://" + stale
	sp2, err := New(ctx, cfg, testLogger(), Notify{})
	if err != nil {
		t.Fatalf("start over a stale socket: %v", err)
	}
	if fi, _ := os.Stat(shared); fi.Mode().Perm() != 0o755 {
		t.Fatalf("an existing directory's mode changed to %v", fi.Mode().Perm())
	}
	if fi, err := os.Stat(stale); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket in an existing directory: %v %v, want mode 0600", fi.Mode(), err)
	}
	nobody2 := exec.Command(gobgp, "--target", "unix://"+stale, "neighbor")
	nobody2.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := nobody2.CombinedOutput(); !strings.Contains(string(out), "permission denied") {
		t.Fatalf("uid 65534 through a world-readable directory: %v\n%s", err, out)
	}
	sp2.Stop()
	cfg.GRPCAddress = "unix://" + sock

	// Not a socket at the path: refused, left alone.
	os.Remove(sock)
	if err := os.WriteFile(sock, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, cfg, testLogger(), Notify{}); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("start over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "keep" {
		t.Fatal("the file at the socket path was touched")
	}
}

// staleSocket leaves a socket file at path, as a killed agent does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}
