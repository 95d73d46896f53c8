package policy

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestBlockRanges(t *testing.T) {
	got := fmt.Sprint(blockRanges(IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/24"),
		Except: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/30"), netip.MustParsePrefix("10.0.0.128/25")}}))
	if got != "[10.0.0.4-10.0.0.127]" {
		t.Fatalf("got %s", got)
	}
}
