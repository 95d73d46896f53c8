package labtest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// Serve answers every TCP connection on port in a pod with the pod's
// name, and echoes every UDP datagram on the same port, until stop.
func Serve(p Pod, port int) (stop func(), err error) {
	var ln net.Listener
	var pc net.PacketConn
	err = p.NS.Do(func() (err error) {
		if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(p.Name))
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return func() { ln.Close(); pc.Close() }, nil
}

// Fetch connects from ns to addr and returns what the server said.
func Fetch(ns netnstest.NS, addr string) (string, error) {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 300*time.Millisecond); return }); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// UDPStream sends a numbered datagram every interval on each of several
// flows (source ports) and counts the echoes that come back.
type UDPStream struct {
	mu       sync.Mutex
	sent     int
	sentAt   map[uint64]time.Time
	answered map[uint64]bool
	stop     chan struct{}
	wg       sync.WaitGroup
	conns    []*net.UDPConn
}

// StartUDPStream starts flows senders from ns to addr.
func StartUDPStream(ns netnstest.NS, addr string, flows int, every time.Duration) (*UDPStream, error) {
	s := &UDPStream{answered: map[uint64]bool{}, sentAt: map[uint64]time.Time{}, stop: make(chan struct{})}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	for f := range flows {
		var c *net.UDPConn
		if err := ns.Do(func() (err error) { c, err = net.DialUDP("udp", nil, raddr); return }); err != nil {
			s.Finish()
			return nil, err
		}
		s.conns = append(s.conns, c)
		s.wg.Add(1)
		go s.receive(c)
		go s.send(c, uint64(f)<<32, every)
	}
	return s, nil
}

func (s *UDPStream) receive(c *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, 16)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if n == 8 {
			s.mu.Lock()
			s.answered[binary.BigEndian.Uint64(buf)] = true
			s.mu.Unlock()
		}
	}
}

func (s *UDPStream) send(c *net.UDPConn, seq uint64, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for ; ; seq++ {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], seq)
		s.mu.Lock()
		s.sent++
		s.sentAt[seq] = time.Now()
		s.mu.Unlock()
		c.Write(b[:])
	}
}

// Finish stops sending, waits a second for the last echoes, and returns
// how many datagrams were sent and how many never came back.
func (s *UDPStream) Finish() (sent, lost int) {
	close(s.stop)
	time.Sleep(time.Second)
	for _, c := range s.conns {
		c.Close()
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent, s.sent - len(s.answered)
}

// LostAt are the send times of the datagrams never answered, after
// Finish: when the loss happened.
func (s *UDPStream) LostAt() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for seq, at := range s.sentAt {
		if !s.answered[seq] {
			out = append(out, at)
		}
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// Answers is how many echoes came back so far.
func (s *UDPStream) Answers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.answered)
}

// NextHops are the active next hops of FRR's route to prefix, from its
// JSON, sorted and space-separated.
func (f *FRR) NextHops(prefix string) string {
	out, err := f.Vtysh("show ip route " + prefix + " json")
	if err != nil {
		return err.Error()
	}
	var routes map[string][]struct {
		Nexthops []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return err.Error()
	}
	var hops []string
	for _, r := range routes[prefix] {
		for _, nh := range r.Nexthops {
			if nh.Active {
				hops = append(hops, nh.IP)
			}
		}
	}
	slices.Sort(hops)
	return strings.Join(hops, " ")
}

// UpFor is how long FRR's session with addr has been Established (an
// hour when it is not).
func (f *FRR) UpFor(addr string) time.Duration {
	out, err := f.Vtysh("show bgp neighbors " + addr + " json")
	var peers map[string]struct {
		State string `json:"bgpState"`
		UpMs  int64  `json:"bgpTimerUpMsec"`
	}
	if err != nil || json.Unmarshal([]byte(out), &peers) != nil || peers[addr].State != "Established" {
		return time.Hour
	}
	return time.Duration(peers[addr].UpMs) * time.Millisecond
}
