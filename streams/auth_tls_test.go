package streams_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/streams"
)

// testCA is a certificate authority made for one test; nothing reaches a system trust
// store.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	File string // CA certificate, PEM
}

var serial int64

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.File = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

// issue returns the files of a certificate for 127.0.0.1 signed by ca.
func (ca *testCA) issue(name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.write(name+".pem", "CERTIFICATE", der), ca.write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

func TestTLSClientWithUntrustedCertificateIsRefused(t *testing.T) {
	trusted, rogue := newTestCA(t, "netsource"), newTestCA(t, "rogue")
	serverCert, serverKey := trusted.issue("server", x509.ExtKeyUsageServerAuth)
	ns, err := streams.StartServer(streams.ServerOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", Log: zerolog.Nop(),
		MaxStore: 1 << 30, MaxMemory: 256 << 20,
		TLS: streams.TLSFiles{CA: trusted.File, Cert: serverCert, Key: serverKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { streams.ShutdownServer(ns) })
	connect := func(sec streams.ClientSecurity) error {
		opts, err := sec.Options()
		if err != nil {
			return err
		}
		nc, err := nats.Connect(ns.ClientURL(), append(opts, nats.MaxReconnects(0), nats.Timeout(3*time.Second))...)
		if err == nil {
			nc.Close()
		}
		return err
	}

	goodCert, goodKey := trusted.issue("agent", x509.ExtKeyUsageClientAuth)
	if err := connect(streams.ClientSecurity{TLS: streams.TLSFiles{CA: trusted.File, Cert: goodCert, Key: goodKey}}); err != nil {
		t.Fatalf("client with a certificate of the trusted CA: %v", err)
	}
	// A client that presents a certificate of another CA. Go's TLS client would not even
	// send a certificate the server's CA list does not name, so force it.
	badCert, badKey := rogue.issue("intruder", x509.ExtKeyUsageClientAuth)
	pair, err := tls.LoadX509KeyPair(badCert, badKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(trusted.cert)
	presented := false
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(0), nats.Secure(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { presented = true; return &pair, nil }}))
	if err == nil {
		nc.Close()
		t.Fatal("client with a certificate of an untrusted CA connected")
	}
	if !presented {
		t.Fatal("the untrusted certificate was never presented")
	}
	t.Logf("certificate of an untrusted CA: refused: %v", err)
	for name, sec := range map[string]streams.ClientSecurity{
		"certificate of another CA (not sent)": {TLS: streams.TLSFiles{CA: trusted.File, Cert: badCert, Key: badKey}},
		"no client certificate":                {TLS: streams.TLSFiles{CA: trusted.File}},
		"no TLS at all":                        {},
		// The client side of the same check: a server whose CA the client does not trust.
		"server not trusted by the client": {TLS: streams.TLSFiles{CA: rogue.File, Cert: goodCert, Key: goodKey}},
	} {
		err := connect(sec)
		if err == nil {
			t.Errorf("%s: connected, want refused", name)
			continue
		}
		t.Logf("%s: refused: %v", name, err)
	}
	// The embedded server's own in-process client needs no TLS.
	nc, err = streams.ConnectInProcess(ns)
	if err != nil {
		t.Fatalf("in-process client: %v", err)
	}
	nc.Close()
}
