package container

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFixResolvConfRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	os.WriteFile(target, []byte("nameserver 127.0.0.1\n"), 0o644)
	link := filepath.Join(dir, "resolv.conf")
	os.Symlink(target, link)
	_, err := FixResolvConf(Info{Name: "x", ResolvConfPath: link}, DefaultGatewayDNS)
	if err == nil {
		t.Error("FixResolvConf through a symlink = nil error; want a refusal")
	}
	if b, _ := os.ReadFile(target); string(b) != "nameserver 127.0.0.1\n" {
		t.Errorf("symlink target was written: %q", b)
	}
}

func TestFixResolvConfInPlace(t *testing.T) {
	p := writeResolv(t, "nameserver 127.0.0.11\n")
	before, _ := os.Stat(p)
	ch, err := FixResolvConf(Info{Name: "x", ResolvConfPath: p}, DefaultGatewayDNS)
	if err != nil || !ch.Changed || !reflect.DeepEqual(ch.Dropped, []string{"127.0.0.11"}) {
		t.Fatalf("FixResolvConf = %+v, %v", ch, err)
	}
	after, _ := os.Stat(p)
	if !os.SameFile(before, after) {
		t.Error("resolv.conf was replaced, not rewritten in place: a bind mount would not see it")
	}
	b, _ := os.ReadFile(p)
	if !strings.HasSuffix(string(b), "nameserver 100.96.0.1 # clawnet gateway\n") {
		t.Errorf("content = %q", b)
	}
}
