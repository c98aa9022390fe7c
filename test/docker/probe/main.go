// Command probe is the static test program inside the Docker test image. It
// does one network action and reports it on stdout as one line, so tests can
// tell what happened and how long it took from inside an agent container.
// It is built with CGO_ENABLED=0: the pure Go resolver reads the
// container's /etc/resolv.conf and needs no libc in the image.
//
//	probe ifaces                  names of the network interfaces, one a line
//	probe lookup NAME             the addresses NAME resolves to
//	probe tcp HOST:PORT [DATA]    connect, send DATA, half-close, print the reply
//	probe http URL                GET URL, print the status and body
//	probe pause                   block until SIGTERM (a clawnet run holder)
//
// Exit status: 0 success, 1 the action failed, 2 bad usage. Failures print
// "error after <ms>ms: <err>" so tests can check that a deny is fast.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/clawnet/clawnet/container"
)

const timeout = 10 * time.Second

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	switch os.Args[1] {
	case "ifaces":
		err = ifaces()
	case "lookup":
		need(3)
		err = lookup(ctx, os.Args[2])
	case "tcp":
		need(3)
		data := "probe\n"
		if len(os.Args) > 3 {
			data = os.Args[3]
		}
		err = tcp(ctx, os.Args[2], data)
	case "http":
		need(3)
		err = get(ctx, os.Args[2])
	case "pause":
		err = container.Pause(context.Background())
	default:
		usage()
	}
	if err != nil {
		fmt.Printf("error after %dms: %v\n", time.Since(start).Milliseconds(), err)
		os.Exit(1)
	}
}

func need(n int) {
	if len(os.Args) < n {
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe ifaces | lookup NAME | tcp HOST:PORT [DATA] | http URL | pause")
	os.Exit(2)
}

func ifaces() error {
	is, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range is {
		fmt.Println(i.Name)
	}
	return nil
}

func lookup(ctx context.Context, name string) error {
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		return err
	}
	fmt.Println(strings.Join(addrs, " "))
	return nil
}

func tcp(ctx context.Context, addr, data string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := io.WriteString(c, data); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	fmt.Printf("%s", b)
	return nil
}

func get(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
	return nil
}
