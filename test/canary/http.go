package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// countListener hands out countConns so the HTTP servers can log byte counts
// per connection.
type countListener struct{ net.Listener }

func (l countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newCountConn(c), nil
}

func (s *server) listenHTTP(certs *certMinter) error {
	plain, err := net.Listen("tcp", s.addr(portHTTP))
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	if !s.own(plain) {
		return errors.New("server closed")
	}
	tlsLn, err := net.Listen("tcp", s.addr(portHTTPS))
	if err != nil {
		return fmt.Errorf("listen https: %w", err)
	}
	if !s.own(tlsLn) {
		return errors.New("server closed")
	}
	tcfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Any SNI is accepted: tests ask for names the gateway decides on,
		// and the canary's job is only to record which one arrived.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if cc, ok := hello.Conn.(*countConn); ok {
				cc.setSNI(hello.ServerName)
			}
			return nil, nil
		},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certs.get(hello.ServerName)
		},
	}
	h2Ln, err := net.Listen("tcp", s.addr(portH2C))
	if err != nil {
		return fmt.Errorf("listen h2c: %w", err)
	}
	if !s.own(h2Ln) {
		return errors.New("server closed")
	}
	for _, h := range []struct {
		service string
		ln      net.Listener
		handler http.Handler
	}{
		{canarylog.ServiceHTTP, countListener{plain}, s.httpHandler(canarylog.ServiceHTTP)},
		{canarylog.ServiceHTTPS, tls.NewListener(countListener{tlsLn}, tcfg), s.httpHandler(canarylog.ServiceHTTPS)},
		// The h2c package, deprecated as it is, is the only server of
		// Upgrade: h2c in Go (net/http serves prior knowledge only), and
		// the upgrade is one of the ways a client may switch a checked
		// HTTP/1.1 connection to HTTP/2.
		{canarylog.ServiceH2C, countListener{h2Ln}, h2c.NewHandler(s.httpHandler(canarylog.ServiceH2C), &http2.Server{})},
	} {
		srv := &http.Server{
			Handler:           h.handler,
			ReadHeaderTimeout: 30 * time.Second,
			ConnState:         s.httpConnState(h.service),
			ErrorLog:          nil,
		}
		if !s.own(closerFunc(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			return srv.Close()
		})) {
			return errors.New("server closed")
		}
		s.spawn(func() { srv.Serve(h.ln) })
	}
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func underlying(c net.Conn) *countConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*countConn)
	return cc
}

func (s *server) httpConnState(service string) func(net.Conn, http.ConnState) {
	return func(c net.Conn, st http.ConnState) {
		e := canarylog.Entry{Service: service, Proto: "tcp", Remote: c.RemoteAddr().String(), Local: c.LocalAddr().String()}
		switch st {
		case http.StateNew:
			e.Event = canarylog.EventOpen
		case http.StateHijacked:
			// An h2c connection lives on as HTTP/2 after the hijack: its
			// close line is written when it really closes, and it is
			// closed with the server.
			if cc := underlying(c); cc != nil && s.track(cc, true) {
				e.Event = canarylog.EventClose
				cc.onClose(func() {
					s.track(cc, false)
					cc.fill(&e)
					s.log.Log(e)
				})
				return
			}
			e.Event = canarylog.EventClose
		case http.StateClosed:
			e.Event = canarylog.EventClose
			if cc := underlying(c); cc != nil {
				cc.fill(&e)
			}
		default:
			return
		}
		s.log.Log(e)
	}
}

func (s *server) httpHandler(service string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		e := canarylog.Entry{
			Service: service, Event: canarylog.EventRequest, Proto: "tcp",
			Remote: r.RemoteAddr, Method: r.Method, HTTPProto: r.Proto, Host: r.Host, Path: r.URL.Path, Bytes: n,
		}
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			e.Local = la.String()
		}
		if r.TLS != nil {
			e.SNI = r.TLS.ServerName
		}
		if err != nil {
			e.Error = err.Error()
		}
		s.log.Log(e)
		fmt.Fprintf(w, "canary %s %s%s\n", service, r.Host, r.URL.Path)
	})
}

// certMinter signs a leaf certificate for whatever name a client asks for,
// from a CA made at start, so clients that verify can trust the CA file.
type certMinter struct {
	caPEM  []byte
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	leafKy *ecdsa.PrivateKey

	mu    sync.Mutex // guards cache
	cache map[string]*tls.Certificate
}

func newCertMinter() (*certMinter, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate leaf key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "clawnet canary test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &certMinter{
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		ca:     ca,
		caKey:  caKey,
		leafKy: leafKey,
		cache:  make(map[string]*tls.Certificate),
	}, nil
}

func (m *certMinter) get(name string) (*tls.Certificate, error) {
	if name == "" {
		name = "canary.test"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.cache[name]; ok {
		return c, nil
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(m.cache) + 2)),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca, &m.leafKy.PublicKey, m.caKey)
	if err != nil {
		return nil, fmt.Errorf("mint certificate for %q: %w", name, err)
	}
	c := &tls.Certificate{Certificate: [][]byte{der, m.ca.Raw}, PrivateKey: m.leafKy}
	m.cache[name] = c
	return c, nil
}
