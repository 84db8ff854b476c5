package links

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// watchBuffer is the depth of the update and event channels between the kernel socket and
// the caller.
const watchBuffer = 256

// Watch implements Dataplane with an RTNLGRP_LINK subscription inside the agent namespace.
//
// Netlink multicast is lossy: when the socket's receive buffer overflows the kernel drops
// messages and the next read fails with ENOBUFS. The subscription then ends and the channel
// is closed; the caller relists (Inventory) and watches again, as the Dataplane contract says.
func (n *Netlink) Watch(ctx context.Context) (<-chan LinkEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	updates := make(chan netlink.LinkUpdate, watchBuffer)
	done := make(chan struct{})
	ns := n.ns
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: &ns,
		// Plugging hundreds of ports at once overflowed the default 208 KiB socket buffer
		// (ENOBUFS ends the subscription and forces a full resync).
		ReceiveBufferSize:      8 << 20,
		ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			if ctx.Err() == nil {
				n.log.Warn().Err(err).Msg("link subscription error")
			}
		},
	})
	if err != nil {
		close(done)
		return nil, fmt.Errorf("watch links: %w", err)
	}
	// Seed the ifindex -> name cache that resolves masters; misses are looked up.
	names := map[int]string{}
	if links, err := retryDump(n.h.LinkList); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	out := make(chan LinkEvent, watchBuffer)
	go n.forward(ctx, updates, done, out, names)
	return out, nil
}

// forward translates updates until ctx ends or the subscription fails, then stops the
// subscription and drains it so its goroutine can exit.
func (n *Netlink) forward(ctx context.Context, updates <-chan netlink.LinkUpdate, done chan struct{},
	out chan<- LinkEvent, names map[int]string) {
	defer close(out)
	defer func() {
		close(done) // closes the socket: the receive loop fails and closes updates
		for range updates {
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				n.log.Warn().Msg("link subscription ended")
				return
			}
			select {
			case out <- n.linkEvent(u, names):
			case <-ctx.Done():
				return
			}
		}
	}
}

func (n *Netlink) linkEvent(u netlink.LinkUpdate, names map[int]string) LinkEvent {
	a := u.Link.Attrs()
	deleted := u.Header.Type == unix.RTM_DELLINK
	if deleted {
		delete(names, a.Index)
	} else {
		names[a.Index] = a.Name
	}
	return LinkEvent{
		Name:    a.Name,
		Ifindex: a.Index,
		Deleted: deleted,
		Up:      u.Flags&unix.IFF_UP != 0,
		Master:  n.masterName(a.MasterIndex, names),
	}
}

func (n *Netlink) masterName(index int, names map[int]string) string {
	if index == 0 {
		return ""
	}
	if name, ok := names[index]; ok {
		return name
	}
	l, err := n.h.LinkByIndex(index)
	if err != nil {
		return ""
	}
	names[index] = l.Attrs().Name
	return l.Attrs().Name
}
