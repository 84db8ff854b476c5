package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A batch is built with google/nftables and sent the way nft sends one. google/nftables
// asks the kernel to acknowledge every message of a batch, and to echo every new rule,
// and reads each answer with two system calls; a full load of 1000 ports is some 33,000
// messages, and those answers cost about as much as the kernel's work. nft is answered
// only for what fails. Here only the last command asks for an acknowledgement: the kernel processes a
// batch inside sendmsg, then delivers the errors of failed messages and that one
// acknowledgement, after committing or aborting the whole batch.

// batchBuilder is an nftables.Conn that captures the messages of Flush instead of sending
// them (nltest answers every acknowledgement Flush waits for).
type batchBuilder struct {
	*nftables.Conn
	msgs []netlink.Message
}

var ackMsg = netlink.Message{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4+16)}

func newBatchBuilder() *batchBuilder {
	b := &batchBuilder{}
	c, _ := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil {
			return []netlink.Message{ackMsg}, nil // what Flush reads after each message
		}
		for _, m := range req {
			m.Data = append([]byte(nil), m.Data...)
			b.msgs = append(b.msgs, m)
		}
		return nil, nil
	}))
	b.Conn = c
	return b
}

// send builds the batch and sends it in the namespace; it returns the kernel's first error.
func (n *Netlink) send(b *batchBuilder) error {
	if err := b.Flush(); err != nil {
		return fmt.Errorf("build batch: %w", err)
	}
	msgs := b.msgs
	b.msgs = nil
	return n.sendCaptured(msgs)
}

// sendCaptured sends the messages of one batch (begin, commands, end).
func (n *Netlink) sendCaptured(msgs []netlink.Message) error {
	if len(msgs) < 3 {
		return nil // begin and end only: nothing to do
	}
	last := len(msgs) - 2 // the last command, before NFNL_MSG_BATCH_END
	for i := range msgs {
		// google/nftables also asks for every new rule to be echoed back (for its handle).
		msgs[i].Header.Flags &^= netlink.Acknowledge | netlink.Echo
		msgs[i].Header.Sequence, msgs[i].Header.PID, msgs[i].Header.Length = 0, 0, 0
	}
	msgs[last].Header.Flags |= netlink.Acknowledge

	cfg := &netlink.Config{}
	if n.ns >= 0 {
		cfg.NetNS = int(n.ns)
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer conn.Close()
	if err := setBatchBuffers(conn); err != nil {
		return err
	}
	sent, err := conn.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	// The kernel has processed the batch inside sendmsg and queued its answers: read them
	// without waiting. mdlayher/netlink's Receive would turn an error into a Go error and
	// drop which message it answered, so the answers are parsed here.
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	want := sent[last].Header.Sequence
	first := sent[0].Header.Sequence
	buf := make([]byte, 1<<16)
	var refused error
	answered := false
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return true
		}); err != nil {
			return err
		}
		if errors.Is(rerr, unix.EAGAIN) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read batch answers: %w", rerr)
		}
		answers, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("read batch answers: %w", err)
		}
		for _, a := range answers {
			if a.Header.Type != unix.NLMSG_ERROR || len(a.Data) < 4 {
				continue
			}
			if a.Header.Seq == want {
				answered = true
			}
			if errno := int32(binary.NativeEndian.Uint32(a.Data[:4])); errno != 0 && refused == nil {
				i := int(a.Header.Seq - first)
				refused = fmt.Errorf("the kernel refused message %d of %d (%s): %w", i, len(msgs), msgType(msgs, i), syscall.Errno(-errno))
			}
		}
	}
	if refused != nil {
		return refused
	}
	if !answered {
		return fmt.Errorf("no answer from the kernel to a batch of %d messages", len(msgs))
	}
	return nil
}

// msgType names an nftables message type for errors.
func msgType(msgs []netlink.Message, i int) string {
	if i < 0 || i >= len(msgs) {
		return "?"
	}
	names := map[int]string{unix.NFT_MSG_NEWTABLE: "new table", unix.NFT_MSG_DELTABLE: "delete table", unix.NFT_MSG_NEWCHAIN: "new chain",
		unix.NFT_MSG_DELCHAIN: "delete chain", unix.NFT_MSG_NEWRULE: "new rule", unix.NFT_MSG_DELRULE: "flush chain",
		unix.NFT_MSG_NEWSET: "new set", unix.NFT_MSG_DELSET: "delete set", unix.NFT_MSG_NEWSETELEM: "new set elements",
		unix.NFT_MSG_DELSETELEM: "delete set elements"}
	if name, ok := names[int(msgs[i].Header.Type)&0xff]; ok {
		return name
	}
	return fmt.Sprintf("type %d", msgs[i].Header.Type)
}

func setBatchBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// FORCE variants exceed net.core.[rw]mem_max (the agent runs as root); the kernel
		// takes a batch in one sendmsg.
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchBuffer); serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
		}
	})
	return errors.Join(err, serr)
}
