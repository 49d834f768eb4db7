package ledger

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestMemberRPCListenHost: a member home binds its RPC on 127.0.0.1 unless
// RPCListenHost opens it (a member whose node serves gateways on other
// hosts); a host that is not one is refused, naming it.
func TestMemberRPCListenHost(t *testing.T) {
	for _, c := range []struct {
		host, laddr, url string
	}{
		{"", "tcp://127.0.0.1:31657", "http://127.0.0.1:31657"},
		{"0.0.0.0", "tcp://0.0.0.0:31657", "http://127.0.0.1:31657"},
		{"::1", "tcp://[::1]:31657", "http://[::1]:31657"},
	} {
		home := filepath.Join(t.TempDir(), "m")
		h, _, err := InitMember(home, MemberOptions{Org: "Org R", RPCPort: 31657, NoPrometheus: true, RPCListenHost: c.host})
		if err != nil {
			t.Fatalf("host %q: %v", c.host, err)
		}
		conf, err := LoadConfig(home)
		if err != nil {
			t.Fatal(err)
		}
		if conf.RPC.ListenAddress != c.laddr || h.RPCURL != c.url {
			t.Fatalf("host %q: rpc laddr %q, url %q; want %q, %q", c.host, conf.RPC.ListenAddress, h.RPCURL, c.laddr, c.url)
		}
	}
	_, _, err := InitMember(filepath.Join(t.TempDir(), "m"), MemberOptions{Org: "Org R", RPCListenHost: "tcp://0.0.0.0"})
	if err == nil || !strings.Contains(err.Error(), `RPC listen host "tcp://0.0.0.0"`) {
		t.Fatalf("bad RPC listen host: %v", err)
	}
}
