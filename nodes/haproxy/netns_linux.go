package haproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/links"
)

// openNetlinkIn opens a route handle inside the named namespace, with a timeout on each
// request. The caller closes both.
func openNetlinkIn(name string) (netns.NsHandle, *netlink.Handle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return ns, nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		_ = ns.Close()
		return ns, nil, fmt.Errorf("open netlink in netns %s: %w", name, err)
	}
	if err := h.SetSocketTimeout(5 * time.Second); err != nil {
		h.Close()
		_ = ns.Close()
		return ns, nil, err
	}
	return ns, h, nil
}

// waitUsable waits until every address of addrs is on device in namespace nsName and usable,
// that is not tentative: an IPv6 address is tentative while duplicate address detection
// runs, and haproxy cannot bind it then (Neutron bug 1403001). It subscribes to address
// changes before looking, so no change is missed; a failed DAD is an error.
func waitUsable(ctx context.Context, nsName, device string, addrs []net.IP) error {
	if len(addrs) == 0 {
		return nil
	}
	ns, h, err := openNetlinkIn(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	defer h.Close()
	updates := make(chan netlink.AddrUpdate, 16)
	done := make(chan struct{})
	defer func() {
		close(done)
		// The subscription's goroutine may be sending; let it finish and close the channel.
		go func() {
			for range updates {
			}
		}()
	}()
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{Namespace: &ns}); err != nil {
		return fmt.Errorf("subscribe to addresses in netns %s: %w", nsName, err)
	}
	for {
		pending, err := addrState(h, device, addrs)
		if err != nil {
			return err
		}
		if pending == "" {
			return nil
		}
		select {
		case _, ok := <-updates:
			if !ok {
				return fmt.Errorf("address subscription in netns %s ended while %s", nsName, pending)
			}
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", pending, ctx.Err())
		}
	}
}

// addrState says what keeps addrs from being usable on device ("" when nothing does).
func addrState(h *netlink.Handle, device string, addrs []net.IP) (string, error) {
	link, err := h.LinkByName(device)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return fmt.Sprintf("device %s does not exist yet", device), nil
		}
		return "", fmt.Errorf("find %s: %w", device, err)
	}
	list, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return "", fmt.Errorf("list addresses of %s: %w", device, err)
	}
	var pending []string
	for _, want := range addrs {
		found := false
		for _, a := range list {
			if !a.IP.Equal(want) {
				continue
			}
			found = true
			switch {
			case a.Flags&unix.IFA_F_DADFAILED != 0:
				return "", fmt.Errorf("%s on %s: duplicate address detected", want, device)
			case a.Flags&unix.IFA_F_TENTATIVE != 0:
				pending = append(pending, fmt.Sprintf("%s is tentative (duplicate address detection)", want))
			}
		}
		if !found {
			pending = append(pending, fmt.Sprintf("%s is not on %s yet", want, device))
		}
	}
	return strings.Join(pending, "; "), nil
}

// Announce implements Driver with raw ARP frames from a packet socket opened inside the
// namespace: the RFC 5227 announcement `arping -U` sends (an ARP request whose sender and
// target are the VIP), without depending on iputils-arping. IPv6 addresses are skipped:
// neighbours learn them through the kernel's own neighbour discovery.
func (m *Manager) Announce(ctx context.Context, nsName, device string, addrs []net.IP, count int) error {
	return announce(ctx, nsName, device, addrs, count)
}

func announce(ctx context.Context, nsName, device string, addrs []net.IP, count int) error {
	var v4 []net.IP
	for _, a := range addrs {
		if ip := a.To4(); ip != nil {
			v4 = append(v4, ip)
		}
	}
	if count <= 0 || len(v4) == 0 {
		return nil
	}
	ns, h, err := openNetlinkIn(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	link, err := h.LinkByName(device)
	h.Close()
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", device, nsName, err)
	}
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("%s has no ethernet address", device)
	}
	fd, err := socketAt(ns, unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("packet socket in netns %s: %w", nsName, err)
	}
	to := &unix.SockaddrLinklayer{Ifindex: link.Attrs().Index, Protocol: htons(unix.ETH_P_ARP), Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	send := func() error {
		var errs []error
		for _, ip := range v4 {
			if err := unix.Sendto(fd, garpFrame(mac, ip), 0, to); err != nil {
				errs = append(errs, fmt.Errorf("gratuitous ARP for %s on %s: %w", ip, device, err))
			}
		}
		return errors.Join(errs...)
	}
	if err := send(); err != nil || count == 1 {
		_ = unix.Close(fd)
		return err
	}
	go func() {
		defer unix.Close(fd)
		t := time.NewTicker(time.Second) // arping's interval
		defer t.Stop()
		for range count - 1 {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = send()
			}
		}
	}()
	return nil
}

// garpFrame is an Ethernet broadcast ARP request with sender = target = ip.
func garpFrame(mac net.HardwareAddr, ip net.IP) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(f[14:16], 1)      // hardware type ethernet
	binary.BigEndian.PutUint16(f[16:18], 0x0800) // protocol IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:22], 1) // request
	copy(f[22:28], mac)
	copy(f[28:32], ip.To4())
	// target hardware address stays zero (RFC 5227)
	copy(f[38:42], ip.To4())
	return f
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// socketAt opens a socket inside ns (see links.SocketIn).
func socketAt(ns netns.NsHandle, domain, typ, proto int) (int, error) {
	return links.SocketIn(ns, domain, typ, proto)
}
