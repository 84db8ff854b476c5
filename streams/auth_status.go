package streams

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Headers an agent puts on its own status messages.
const (
	// HeaderPublisher is "<host>/<instance>": the host and a random id of the agent process.
	HeaderPublisher = "Ns-Publisher"
	// HeaderPublisherSig authenticates subject, publisher header and body (base64url
	// HMAC-SHA256) with a key derived from the agent's NKEY seed, when it has one. Only the
	// agent itself checks it, so a symmetric key suffices; it costs about a microsecond,
	// where an ed25519 signature and its check cost ~100 µs each per status message.
	HeaderPublisherSig = "Ns-Publisher-Sig"
)

// StatusStamp marks an agent's own status messages so that the agent can tell them from
// messages someone else put on its subjects: with permissions in place nobody else can,
// so a foreign message means a misconfigured server, a leaked key, or a second agent
// running under the same host name. Defence in depth, not a substitute for permissions.
type StatusStamp struct {
	host, instance string
	mac            []byte // HMAC key; nil: no signature
	pub            string // the NKEY's public key, for messages
}

// NewStatusStamp returns a stamp for this process of host's agent. key (may be nil) is the
// agent's NKEY: its signature lets the agent recognise its messages across restarts,
// which the per-process instance id alone cannot.
func NewStatusStamp(host string, key nkeys.KeyPair) (*StatusStamp, error) {
	if err := CheckToken("host", host); err != nil {
		return nil, err
	}
	s := &StatusStamp{host: host, instance: uuid.NewString()}
	if key != nil {
		pub, err := key.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("status stamp: %w", err)
		}
		seed, err := key.Seed()
		if err != nil {
			return nil, fmt.Errorf("status stamp: the key has no seed: %w", err)
		}
		sum := sha256.Sum256(append([]byte("netsource status stamp\x00"), seed...))
		s.pub, s.mac = pub, sum[:]
	}
	return s, nil
}

// Publisher is this process's HeaderPublisher value.
func (s *StatusStamp) Publisher() string { return s.host + "/" + s.instance }

func (s *StatusStamp) sum(subject, publisher string, data []byte) []byte {
	h := hmac.New(sha256.New, s.mac)
	h.Write([]byte(subject))
	h.Write([]byte{'\n'})
	h.Write([]byte(publisher))
	h.Write([]byte{'\n'})
	h.Write(data)
	return h.Sum(nil)
}

// Stamp sets the publisher headers on msg.
func (s *StatusStamp) Stamp(msg *nats.Msg) error {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	p := s.Publisher()
	msg.Header.Set(HeaderPublisher, p)
	if s.mac != nil {
		msg.Header.Set(HeaderPublisherSig, base64.RawURLEncoding.EncodeToString(s.sum(msg.Subject, p, msg.Data)))
	}
	return nil
}

// Foreign says why a message on this host's status subjects was not published by this
// agent, or "" when it was (or may have been). live says the message was stored while this
// process runs (a consumer that delivers only new messages): it must then carry this
// process's instance id. Older messages count as the agent's own when they carry its
// signature, or, without a key, whenever they carry a publisher header of this host (there
// is nothing to check them against).
func (s *StatusStamp) Foreign(m Msg, live bool) string {
	if !strings.HasPrefix(m.Subject, StatusRoot+"."+s.host+".") {
		return "" // another host's subject: not ours to judge
	}
	p := m.Header.Get(HeaderPublisher)
	if p == "" {
		return "no " + HeaderPublisher + " header"
	}
	if host, _, _ := strings.Cut(p, "/"); host != s.host {
		return fmt.Sprintf("published as %q", p)
	}
	if s.mac != nil {
		sig, err := base64.RawURLEncoding.DecodeString(m.Header.Get(HeaderPublisherSig))
		if err != nil || len(sig) == 0 {
			return "no valid " + HeaderPublisherSig + " header"
		}
		if !hmac.Equal(sig, s.sum(m.Subject, p, m.Data)) {
			return "signature does not match this agent's key " + s.pub
		}
	}
	if live && p != s.Publisher() {
		return fmt.Sprintf("published by another process %q while this one (%s) runs", p, s.Publisher())
	}
	return ""
}

// Wrap returns js with every PublishMsg to this host's status subjects stamped. The rest
// of the interface is js's own.
func (s *StatusStamp) Wrap(js jetstream.JetStream) jetstream.JetStream {
	return stampingJetStream{JetStream: js, stamp: s}
}

type stampingJetStream struct {
	jetstream.JetStream
	stamp *StatusStamp
}

func (j stampingJetStream) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasPrefix(msg.Subject, StatusRoot+"."+j.stamp.host+".") {
		if err := j.stamp.Stamp(msg); err != nil {
			return nil, err
		}
	}
	return j.JetStream.PublishMsg(ctx, msg, opts...)
}
