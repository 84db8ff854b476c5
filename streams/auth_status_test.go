package streams_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/netsource/netsource/streams"
)

func TestStatusStampTellsOwnFromForeign(t *testing.T) {
	key, _ := nkeys.CreateUser()
	other, _ := nkeys.CreateUser()
	stamped := func(s *streams.StatusStamp, subject, body string) streams.Msg {
		msg := &nats.Msg{Subject: subject, Data: []byte(body)}
		if err := s.Stamp(msg); err != nil {
			t.Fatal(err)
		}
		return streams.Msg{Subject: subject, Header: msg.Header, Data: msg.Data}
	}
	const subject = "ns.status.hostA.port.p1"
	agent, _ := streams.NewStatusStamp("hostA", key)
	restarted, _ := streams.NewStatusStamp("hostA", key) // the same agent after a restart
	impostor, _ := streams.NewStatusStamp("hostA", other)
	unkeyed, _ := streams.NewStatusStamp("hostA", nil)
	unkeyedRestart, _ := streams.NewStatusStamp("hostA", nil)

	own := stamped(agent, subject, "ACTIVE")
	tampered := own
	tampered.Data = []byte("DOWN")
	for _, tc := range []struct {
		name    string
		s       *streams.StatusStamp
		m       streams.Msg
		live    bool
		foreign bool
	}{
		{"own message, live", agent, own, true, false},
		{"own message, history", agent, own, false, false},
		{"previous process, history (same key)", restarted, own, false, false},
		{"previous process, live", restarted, own, true, true},
		{"other key", agent, stamped(impostor, subject, "ACTIVE"), false, true},
		{"body changed", agent, tampered, false, true},
		{"no header", agent, streams.Msg{Subject: subject, Header: nats.Header{}, Data: []byte("x")}, false, true},
		{"no header, unkeyed", unkeyed, streams.Msg{Subject: subject, Header: nats.Header{}, Data: []byte("x")}, false, true},
		{"unkeyed previous process, history", unkeyedRestart, stamped(unkeyed, subject, "x"), false, false},
		{"unkeyed previous process, live", unkeyedRestart, stamped(unkeyed, subject, "x"), true, true},
		{"another host's subject is not judged", agent, streams.Msg{Subject: "ns.status.hostB.port.p1", Header: nats.Header{}}, true, false},
	} {
		why := tc.s.Foreign(tc.m, tc.live)
		if (why != "") != tc.foreign {
			t.Errorf("%s: Foreign = %q, want foreign %t", tc.name, why, tc.foreign)
		}
	}
}
