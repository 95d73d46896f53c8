package labtest

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// RouteCounter counts distinct routes inside a prefix as the kernel of a
// namespace announces them (netlink notifications, not table polling,
// which at 100,000 routes is itself slow), and notes when the last of a
// wanted number arrived (and when the first did).
type RouteCounter struct {
	within      netip.Prefix
	want        int
	seen        map[netip.Prefix]bool
	First, Last time.Time
	Done        chan struct{}
	Err         chan error
	stop        chan struct{}
}

// CountRoutes subscribes in ns before returning, so nothing is missed.
func CountRoutes(ns netnstest.NS, within netip.Prefix, want int) (*RouteCounter, error) {
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	c := &RouteCounter{within: within, want: want, seen: map[netip.Prefix]bool{},
		Done: make(chan struct{}), Err: make(chan error, 1), stop: make(chan struct{})}
	updates := make(chan netlink.RouteUpdate, 4096)
	err = netlink.RouteSubscribeWithOptions(updates, c.stop, netlink.RouteSubscribeOptions{
		Namespace: &h, ReceiveBufferSize: 256 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			select {
			case c.Err <- fmt.Errorf("route notifications lost: %w", err):
			default:
			}
		},
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for u := range updates {
			if u.Type != unix.RTM_NEWROUTE || u.Dst == nil {
				continue
			}
			a, _ := netip.AddrFromSlice(u.Dst.IP)
			ones, _ := u.Dst.Mask.Size()
			p := netip.PrefixFrom(a.Unmap(), ones)
			if !c.within.Contains(p.Addr()) || c.seen[p] {
				continue
			}
			c.seen[p] = true
			if len(c.seen) == 1 {
				c.First = time.Now()
			}
			if len(c.seen) == c.want {
				c.Last = time.Now()
				close(c.Done)
			}
		}
	}()
	return c, nil
}

// Close ends the subscription.
func (c *RouteCounter) Close() { close(c.stop) }
