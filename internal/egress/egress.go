// Package egress owns the policy on the addresses the server dials on a
// tenant's behalf (git fetches and pushes, forge status APIs): loopback,
// link-local (cloud metadata included), private, unspecified and multicast
// destinations are refused unless an operator allow-list re-opens them.
//
// The check runs on the IP actually dialled, in a net.Dialer Control hook,
// after name resolution: a name that resolves to an internal address (DNS
// rebinding) and a redirect to one are refused like a literal address.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrDenied is wrapped by every refusal of the policy.
var ErrDenied = errors.New("egress denied")

// denied are the ranges refused by default. IPv4-mapped IPv6 addresses are
// unmapped before the check, so ::ffff:127.0.0.1 is loopback too.
var denied = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT, overlay networks)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fc00::/7"), "private"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// Policy decides which IPs may be dialled. Its zero value refuses the
// default ranges and allows everything else.
type Policy struct {
	// Allow re-opens ranges the defaults refuse (the operator's
	// --egress-allow). Nil means none.
	Allow []netip.Prefix
}

// ParseAllow parses CIDRs (or single addresses) for Policy.Allow; the
// error names the entry.
func ParseAllow(cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, fmt.Errorf("egress allow %q: want a CIDR such as 10.0.0.0/8 or an address", c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Check returns nil when ip may be dialled, else an error wrapping
// ErrDenied that names the address and the range.
func (p Policy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrDenied)
	}
	ip = ip.Unmap().WithZone("")
	for _, a := range p.Allow {
		if a.Contains(ip) || (a.Addr().Is4In6() && netip.PrefixFrom(a.Addr().Unmap(), a.Bits()-96).Contains(ip)) {
			return nil
		}
	}
	for _, d := range denied {
		if d.prefix.Contains(ip) {
			return fmt.Errorf("%w: %s is a %s address (the operator can allow it with --egress-allow)", ErrDenied, ip, d.why)
		}
	}
	return nil
}

// Control is a net.Dialer Control hook: it runs after resolution, on the
// address about to be connected, for every attempt (each resolved IP,
// each redirect).
func (p Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: dial %s %q: %v", ErrDenied, network, address, err)
	}
	return p.Check(ap.Addr())
}

// CheckAddr checks a dialled remote address (a net.Addr from a
// connection, for transports that cannot take a Control hook).
func (p Policy) CheckAddr(a net.Addr) error {
	if a == nil {
		return fmt.Errorf("%w: unknown remote address", ErrDenied)
	}
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return p.Check(ip)
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return fmt.Errorf("%w: remote address %q: %v", ErrDenied, a.String(), err)
	}
	return p.Check(ap.Addr())
}

// CheckHost resolves host and checks every address it names: an early,
// clear refusal before a transport that cannot take a Control hook
// dials. It does not replace the check on the dialled address.
func (p Policy) CheckHost(ctx context.Context, host string) error {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return p.Check(ip)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, ip := range ips {
		if err := p.Check(ip); err != nil {
			return fmt.Errorf("%s: %w", host, err)
		}
	}
	return nil
}

// Dialer returns a dialer whose every connection passes the policy.
func (p Policy) Dialer() *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.Control}
}

// Transport returns an HTTP transport that dials through the policy. It
// ignores proxy settings: through a proxy the policy would see only the
// proxy's address.
func (p Policy) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = p.Dialer().DialContext
	return t
}

// HTTPClient returns a client whose every connection, redirects
// included, passes the policy.
func (p Policy) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Transport: p.Transport(), Timeout: timeout}
}

// HostKeyCallback wraps an SSH host-key check with the policy. go-git's
// SSH transport dials without a hook we can set per fetch, but the host
// key is checked during the handshake on the connection it dialled, before
// any credential is sent: refusing there keeps keys and commands away
// from a denied address that a name resolved to at dial time.
func (p Policy) HostKeyCallback(next ssh.HostKeyCallback) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if err := p.CheckAddr(remote); err != nil {
			return fmt.Errorf("ssh %s: %w", hostname, err)
		}
		return next(hostname, remote, key)
	}
}

// Loopback returns the loopback ranges, for an allow-list that opens them
// (tests and the demo, whose git servers and forges run on this machine).
func Loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}
