// Package kubetest runs a real etcd and kube-apiserver on 127.0.0.1 for
// integration tests, from the binaries test/kube/build.sh builds. Only the
// API server runs: tests play the kubelet and the controllers.
package kubetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// Version is the Kubernetes version the binaries are built at.
const Version = "v1.37.2"

// Server is one etcd and one kube-apiserver.
type Server struct {
	URL        string // https://127.0.0.1:PORT
	Token      string // bearer token of a system:masters user
	Kubeconfig string // a kubeconfig file for that user
	dir        string
	bin        string
	etcd, api  *proc
	etcdPort   int
	apiPort    int
	host       string       // the API server's address
	ns         netnstest.NS // where both run; the zero NS is the caller's own
	detached   bool         // outlive the caller (Launch): no parent-death signal
	opts       Options
	extra      []*proc // StartBinary's
}

// Options turn the API server into one real nodes can join.
type Options struct {
	// NodeTokens: a bearer token for each node's kubelet (user
	// system:node:<name>, group system:nodes). Not empty: the Node
	// authorizer, ServiceAccount admission (pods get tokens) and the
	// kubernetes Service's endpoints kept by the API server, as in a real
	// cluster; empty: none of them (tests play the kubelet).
	NodeTokens map[string]string
}

// BinDir is where test/kube/build.sh puts the binaries, found from the
// module root.
func BinDir() string { return filepath.Join(RepoRoot(), ".tools", "kube", Version) }

// RepoRoot is Petrel's source tree, found upwards from the working
// directory ("" outside it).
func RepoRoot() string {
	dir, _ := os.Getwd()
	for ; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && fileExists(filepath.Join(dir, "test", "kube", "build.sh")) {
			return dir
		}
	}
	return ""
}

// Launch runs etcd and the API server outside a test (the demo): in ns on
// host, state under dir. They outlive the caller (a kept demo lab) until
// Stop or a kill of PIDs().
func Launch(dir string, ns netnstest.NS, host string) (*Server, error) {
	bin := BinDir()
	if !fileExists(filepath.Join(bin, "kube-apiserver")) || !fileExists(filepath.Join(bin, "etcd")) {
		return nil, fmt.Errorf("kube-apiserver and etcd not built in %s: run test/kube/build.sh", bin)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return start(dir, bin, ns, host, true, Options{})
}

// PIDs are the servers' process IDs.
func (s *Server) PIDs() []int {
	var out []int
	for _, p := range []*proc{s.etcd, s.api} {
		if p != nil {
			out = append(out, p.cmd.Process.Pid)
		}
	}
	return out
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Start runs a fresh API server for the test (one per package is the
// economical use: it takes about two seconds and 300 MB). In CI missing
// binaries fail the test; elsewhere they skip it.
func Start(t testing.TB) *Server { return startFor(t, netnstest.NS{}, "127.0.0.1", Options{}) }

// StartIn runs the servers inside ns, the API server on host (an address
// of ns), so that processes in other namespaces linked to it reach the
// API. Clients in the test process connect through Dial.
func StartIn(t testing.TB, ns netnstest.NS, host string) *Server {
	return startFor(t, ns, host, Options{})
}

// StartInWith is StartIn with options.
func StartInWith(t testing.TB, ns netnstest.NS, host string, opts Options) *Server {
	return startFor(t, ns, host, opts)
}

func startFor(t testing.TB, ns netnstest.NS, host string, opts Options) *Server {
	t.Helper()
	netnstest.SkipInUnitTier(t)
	bin := BinDir()
	if !fileExists(filepath.Join(bin, "kube-apiserver")) || !fileExists(filepath.Join(bin, "etcd")) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kube-apiserver and etcd not built in %s: run test/kube/build.sh", bin)
		}
		t.Skipf("kube-apiserver and etcd not built in %s: run test/kube/build.sh", bin)
	}
	s, err := start(t.TempDir(), bin, ns, host, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Dial connects from inside the servers' namespace (for rest.Config.Dial).
func (s *Server) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.ns.Name == "" {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	var c net.Conn
	err := s.ns.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

func start(dir, bin string, ns netnstest.NS, host string, detached bool, opts Options) (*Server, error) {
	tok := make([]byte, 16)
	rand.Read(tok)
	s := &Server{dir: dir, bin: bin, Token: hex.EncodeToString(tok), ns: ns, host: host, detached: detached, opts: opts}
	var err error
	if ns.Name != "" {
		s.etcdPort, s.apiPort = 2379, 6443 // a namespace of its own: every port is free
	} else {
		if s.etcdPort, err = freePort(); err != nil {
			return nil, err
		}
		if s.apiPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	s.URL = fmt.Sprintf("https://%s", net.JoinHostPort(host, strconv.Itoa(s.apiPort)))
	if err := s.writeFiles(); err != nil {
		return nil, err
	}
	if err := s.StartEtcd(); err != nil {
		return nil, err
	}
	if err := s.StartAPI(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// freePort finds a free port below the kernel's ephemeral range (32768
// on): a port the kernel hands out for outgoing connections can be taken
// by any test's connection between this check and the server's bind.
func freePort() (int, error) {
	for range 200 {
		port := 10000 + mrand.IntN(22000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port found in 10000-31999")
}

func (s *Server) writeFiles() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string]string{
		"sa.key": string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})),
		"tokens": s.Token + ",admin,admin-uid,system:masters\n",
	}
	for node, tok := range s.opts.NodeTokens {
		files["tokens"] += fmt.Sprintf("%s,system:node:%s,node-%s,system:nodes\n", tok, node, node)
	}
	s.Kubeconfig = filepath.Join(s.dir, "kubeconfig")
	files["kubeconfig"] = s.kubeconfig("")
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// kubeconfig is a kubeconfig of the admin, impersonating as when not empty.
func (s *Server) kubeconfig(as string) string {
	user := fmt.Sprintf("token: %q", s.Token)
	if as != "" {
		user += fmt.Sprintf(", as: %q", as)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {%s}}]
contexts: [{name: test, context: {cluster: test, user: u}}]
current-context: test
`, s.URL, user)
}

// proc is a server process and a channel closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *Server) proc(name string, args ...string) (*proc, error) {
	log, err := os.OpenFile(filepath.Join(s.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Stdout, cmd.Stderr = log, log
	// The servers die with the test process even if it is killed.
	if !s.detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	start := cmd.Start
	if s.ns.Name != "" {
		start = func() error { return s.ns.Start(cmd) }
	}
	if err := start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.done) }()
	return p, nil
}

// StartEtcd (re)starts etcd on its data directory.
func (s *Server) StartEtcd() error {
	client := fmt.Sprintf("http://127.0.0.1:%d", s.etcdPort)
	peerPort := s.etcdPort + 1
	if s.ns.Name == "" {
		var err error
		if peerPort, err = freePort(); err != nil {
			return err
		}
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	var err error
	s.etcd, err = s.proc("etcd", "--data-dir", filepath.Join(s.dir, "etcd"), "--listen-client-urls", client,
		"--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer, "--log-level", "warn")
	return err
}

// StartAPI (re)starts the API server and waits until it is ready.
func (s *Server) StartAPI() error {
	var err error
	cluster := []string{"--authorization-mode", "RBAC", "--endpoint-reconciler-type", "none",
		"--disable-admission-plugins", "ServiceAccount"}
	if len(s.opts.NodeTokens) > 0 {
		cluster = []string{"--authorization-mode", "Node,RBAC", "--kubelet-preferred-address-types", "InternalIP,Hostname"}
	}
	s.api, err = s.proc("kube-apiserver", append([]string{
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", s.etcdPort),
		"--bind-address", s.host, "--advertise-address", s.host, "--secure-port", strconv.Itoa(s.apiPort),
		"--cert-dir", filepath.Join(s.dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(s.dir, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(s.dir, "sa.key"),
		"--token-auth-file", filepath.Join(s.dir, "tokens"),
		"--service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/112"}, cluster...)...)
	if err != nil {
		return err
	}
	// Two minutes: on a loaded 2-core machine (kernel and lab tests in
	// other packages at once) its start-up hooks have taken over one.
	return s.waitReady(2 * time.Minute)
}

// failing keeps the failed checks of a verbose /readyz answer.
func failing(readyz string) string {
	var out []string
	for _, l := range strings.Split(readyz, "\n") {
		if strings.HasPrefix(l, "[-]") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return readyz
	}
	return strings.Join(out, "; ")
}

func (s *Server) waitReady(limit time.Duration) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: s.Dial, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-s.api.done:
			return fmt.Errorf("kube-apiserver exited:\n%s", s.Log("kube-apiserver"))
		default:
		}
		req, _ := http.NewRequest("GET", s.URL+"/readyz?verbose", nil)
		req.Header.Set("Authorization", "Bearer "+s.Token)
		if resp, err := c.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = string(b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready within %s; last /readyz: %s\n%s", limit, failing(last), s.Log("kube-apiserver"))
}

// ServingCert is the API server's self-signed certificate and its CA (a
// controller-manager's --root-ca-file).
func (s *Server) ServingCert() string { return filepath.Join(s.dir, "certs", "apiserver.crt") }

// SAKey is the service-account signing key (a controller-manager's
// --service-account-private-key-file).
func (s *Server) SAKey() string { return filepath.Join(s.dir, "sa.key") }

// StartBinary runs another binary of BinDir beside the servers (in their
// namespace, logging to <dir>/<name>.log, stopped by Stop): the
// controller-manager, the scheduler.
func (s *Server) StartBinary(name string, args ...string) error {
	p, err := s.proc(name, args...)
	if err == nil {
		s.extra = append(s.extra, p)
	}
	return err
}

// Log is the tail of a process's log, for a failure message.
func (s *Server) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, name+".log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// StopAPI stops the API server only (etcd keeps the data): an outage.
func (s *Server) StopAPI() { stop(s.api) }

// Stop stops both servers.
func (s *Server) Stop() {
	for _, p := range s.extra {
		stop(p)
	}
	stop(s.api)
	stop(s.etcd)
}

func stop(p *proc) {
	if p != nil {
		p.cmd.Process.Kill()
		<-p.done
	}
}
