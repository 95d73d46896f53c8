// Package sim is a minimal BGP speaker for scale benchmarks: one TCP
// session, one family, a few prefixes announced, every prefix received
// counted. A thousand of them fit in one process where a thousand full
// speakers would not. It speaks just enough BGP for that: OPEN with the
// multiprotocol and four-octet AS capabilities, KEEPALIVE, UPDATE (IPv4
// NLRI, or MP_REACH/MP_UNREACH for IPv6), no graceful restart.
package sim

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Session is one established session.
type Session struct {
	Local, Remote netip.Addr
	conn          net.Conn
	family        bgp.Family
	asn           uint32
	ibgp          bool // the peer is in our AS: no AS in the path, LOCAL_PREF

	mu      sync.Mutex
	wmu     sync.Mutex
	routes  map[netip.Prefix]netip.Addr // prefix -> next hop
	changed chan struct{}               // closed and replaced at every received change
	err     error
}

// Start runs BGP on conn, a TCP connection to the peer's port 179 that the
// caller opened (from the network namespace it needs): OPEN as AS asn with
// router ID id, then it announces prefixes.
func Start(conn net.Conn, asn uint32, id netip.Addr, hold time.Duration, prefixes []netip.Prefix) (*Session, error) {
	la, ok1 := conn.LocalAddr().(*net.TCPAddr)
	ra, ok2 := conn.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return nil, errors.New("not a TCP connection")
	}
	s := &Session{Local: la.AddrPort().Addr().Unmap(), Remote: ra.AddrPort().Addr().Unmap(), conn: conn, family: bgp.RF_IPv4_UC, asn: asn,
		routes: map[netip.Prefix]netip.Addr{}, changed: make(chan struct{})}
	if s.Local.Is6() {
		s.family = bgp.RF_IPv6_UC
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	if err := s.open(r, id, hold); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Local, err)
	}
	if err := s.Announce(prefixes, nil); err != nil {
		return nil, err
	}
	go s.read(r)
	go s.keepalive(hold / 3)
	return s, nil
}

func (s *Session) open(r *bufio.Reader, id netip.Addr, hold time.Duration) error {
	caps := []bgp.ParameterCapabilityInterface{bgp.NewCapMultiProtocol(s.family), bgp.NewCapFourOctetASNumber(s.asn)}
	as2 := uint16(bgp.AS_TRANS)
	if s.asn <= 0xffff {
		as2 = uint16(s.asn)
	}
	open, err := bgp.NewBGPOpenMessage(as2, uint16(hold/time.Second), id, []bgp.OptionParameterInterface{bgp.NewOptionParameterCapability(caps)})
	if err != nil {
		return err
	}
	if err := s.send(open); err != nil {
		return err
	}
	s.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer s.conn.SetReadDeadline(time.Time{})
	for {
		m, err := readMessage(r)
		if err != nil {
			return err
		}
		switch m.Header.Type {
		case bgp.BGP_MSG_OPEN:
			s.ibgp = peerAS(m.Body.(*bgp.BGPOpen)) == s.asn
			if err := s.send(bgp.NewBGPKeepAliveMessage()); err != nil {
				return err
			}
		case bgp.BGP_MSG_KEEPALIVE:
			return nil
		case bgp.BGP_MSG_NOTIFICATION:
			return fmt.Errorf("NOTIFICATION while opening: %v", m.Body)
		}
	}
}

// Announce sends an UPDATE announcing add and withdrawing withdraw, with
// the session's own address as next hop.
func (s *Session) Announce(add, withdraw []netip.Prefix) error {
	return s.AnnounceVia(s.Local, add, withdraw)
}

// AnnounceVia is Announce with another next hop, as a route reflector
// passes on its clients' routes.
func (s *Session) AnnounceVia(nextHop netip.Addr, add, withdraw []netip.Prefix) error {
	nlri := func(ps []netip.Prefix) ([]bgp.PathNLRI, error) {
		var out []bgp.PathNLRI
		for _, p := range ps {
			n, err := bgp.NewIPAddrPrefix(p)
			if err != nil {
				return nil, err
			}
			out = append(out, bgp.PathNLRI{NLRI: n})
		}
		return out, nil
	}
	a, err := nlri(add)
	if err != nil {
		return err
	}
	w, err := nlri(withdraw)
	if err != nil {
		return err
	}
	if len(a) == 0 && len(w) == 0 {
		return nil
	}
	var attrs []bgp.PathAttributeInterface
	if len(a) > 0 {
		path := []bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{s.asn})}
		if s.ibgp {
			path = nil
		}
		attrs = append(attrs, bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), bgp.NewPathAttributeAsPath(path))
		if s.ibgp {
			attrs = append(attrs, bgp.NewPathAttributeLocalPref(100))
		}
	}
	if s.family == bgp.RF_IPv4_UC {
		if len(a) > 0 {
			nh, err := bgp.NewPathAttributeNextHop(nextHop)
			if err != nil {
				return err
			}
			attrs = append(attrs, nh)
		}
		return s.send(bgp.NewBGPUpdateMessage(w, attrs, a))
	}
	if len(a) > 0 {
		mp, err := bgp.NewPathAttributeMpReachNLRI(s.family, a, nextHop)
		if err != nil {
			return err
		}
		attrs = append(attrs, mp)
	}
	if len(w) > 0 {
		mp, err := bgp.NewPathAttributeMpUnreachNLRI(s.family, w)
		if err != nil {
			return err
		}
		attrs = append(attrs, mp)
	}
	return s.send(bgp.NewBGPUpdateMessage(nil, attrs, nil))
}

// peerAS is the AS an OPEN announces: the four-octet capability's, or the
// two-octet field.
func peerAS(o *bgp.BGPOpen) uint32 {
	for _, p := range o.OptParams {
		if c, ok := p.(*bgp.OptionParameterCapability); ok {
			for _, cap := range c.Capability {
				if as4, ok := cap.(*bgp.CapFourOctetASNumber); ok {
					return as4.CapValue
				}
			}
		}
	}
	return uint32(o.MyAS)
}

func (s *Session) send(m *bgp.BGPMessage) error {
	b, err := m.Serialize(&bgp.MarshallingOption{})
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err = s.conn.Write(b)
	return err
}

func (s *Session) keepalive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if s.send(bgp.NewBGPKeepAliveMessage()) != nil {
			return
		}
	}
}

func readMessage(r *bufio.Reader) (*bgp.BGPMessage, error) {
	var hdr [bgp.BGP_HEADER_LENGTH]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[16:18]))
	if n < bgp.BGP_HEADER_LENGTH {
		return nil, fmt.Errorf("message length %d", n)
	}
	buf := make([]byte, n)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[bgp.BGP_HEADER_LENGTH:]); err != nil {
		return nil, err
	}
	return bgp.ParseBGPMessage(buf, &bgp.MarshallingOption{})
}

// read counts the routes the peer sends until the session ends.
func (s *Session) read(r *bufio.Reader) {
	for {
		m, err := readMessage(r)
		if err != nil {
			s.fail(err)
			return
		}
		switch b := m.Body.(type) {
		case *bgp.BGPUpdate:
			s.update(b)
		case *bgp.BGPNotification:
			s.fail(fmt.Errorf("NOTIFICATION %d/%d", b.ErrorCode, b.ErrorSubcode))
			return
		}
	}
}

func (s *Session) update(u *bgp.BGPUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var nh netip.Addr
	for _, a := range u.PathAttributes {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			nh = a.Value
		case *bgp.PathAttributeMpReachNLRI:
			nh = a.Nexthop
			for _, n := range a.Value {
				if p, ok := n.NLRI.(*bgp.IPAddrPrefix); ok {
					s.routes[p.Prefix] = nh
				}
			}
		case *bgp.PathAttributeMpUnreachNLRI:
			for _, n := range a.Value {
				if p, ok := n.NLRI.(*bgp.IPAddrPrefix); ok {
					delete(s.routes, p.Prefix)
				}
			}
		}
	}
	for _, n := range u.WithdrawnRoutes {
		if p, ok := n.NLRI.(*bgp.IPAddrPrefix); ok {
			delete(s.routes, p.Prefix)
		}
	}
	for _, n := range u.NLRI {
		if p, ok := n.NLRI.(*bgp.IPAddrPrefix); ok {
			s.routes[p.Prefix] = nh
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Session) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Routes is how many prefixes the session has received and not had
// withdrawn, and the error that ended it, if it has ended.
func (s *Session) Routes() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.routes), s.err
}

// Has reports whether prefix was received via next hop nh (any when
// invalid).
func (s *Session) Has(prefix netip.Prefix, nh netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, ok := s.routes[prefix]
	return ok && (!nh.IsValid() || got == nh)
}

// Changed returns a channel closed at the next received change.
func (s *Session) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Close ends the session.
func (s *Session) Close() error { return s.conn.Close() }
