package streams

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ClientSecurity is how a client proves who it is and checks whom it talks to.
type ClientSecurity struct {
	// Creds is a credentials file: an NKEY seed file written by `netsource auth init`
	// (any file holding one user seed line, "SU..."), or a JWT .creds file of a NATS
	// operator setup. Empty: connect without authentication.
	Creds string
	// TLS: CA verifies the server's certificate; Cert and Key are the client's own
	// certificate for servers that require one.
	TLS TLSFiles
}

// Options returns the nats.Connect options for c. With an NKEY seed file they also set the
// user's own inbox prefix (InboxPrefix), the only reply subjects its permissions allow.
func (c ClientSecurity) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if c.Creds != "" {
		data, err := os.ReadFile(c.Creds)
		if err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		if bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
			// A decentralised (operator/JWT) setup: its inbox is whatever its account allows.
			opts = append(opts, nats.UserCredentials(c.Creds))
		} else {
			kp, err := c.KeyPair()
			if err != nil {
				return nil, err
			}
			pub, err := kp.PublicKey()
			if err != nil {
				return nil, fmt.Errorf("credentials %s: %w", c.Creds, err)
			}
			opts = append(opts, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(InboxPrefix(pub)))
		}
	}
	if c.TLS.Enabled() {
		if (c.TLS.Cert == "") != (c.TLS.Key == "") {
			return nil, errors.New("TLS: a client certificate needs both --tls-cert and --tls-key")
		}
		if c.TLS.CA != "" {
			opts = append(opts, nats.RootCAs(c.TLS.CA))
		}
		if c.TLS.Cert != "" {
			opts = append(opts, nats.ClientCert(c.TLS.Cert, c.TLS.Key))
		}
		opts = append(opts, nats.Secure())
	}
	return opts, nil
}

// KeyPair returns the user key of an NKEY seed file, or nil when c has no such file (no
// credentials, or a JWT .creds file).
func (c ClientSecurity) KeyPair() (nkeys.KeyPair, error) {
	if c.Creds == "" {
		return nil, nil
	}
	data, err := os.ReadFile(c.Creds)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
		return nil, nil
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, fmt.Errorf("credentials %s: no NKEY seed found: %w", c.Creds, err)
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("credentials %s: the seed is not a user key (want SU...)", c.Creds)
	}
	return kp, nil
}
