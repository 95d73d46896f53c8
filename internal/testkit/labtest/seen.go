package labtest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// SeenAs connects from a pod to a listener at addr in server's namespace
// and returns the source address the listener saw (masquerade or not).
func SeenAs(t testing.TB, server netnstest.NS, from Pod, addr string) string {
	t.Helper()
	got, err := seenAs(server, from, addr)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func seenAs(server netnstest.NS, from Pod, addr string) (string, error) {
	var ln net.Listener
	if err := server.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		return "", err
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		got <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	var c net.Conn
	if err := from.NS.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return }); err != nil {
		return "", fmt.Errorf("connect from %s to %s: %w", from.Name, addr, err)
	}
	c.Close()
	return <-got, nil
}
