package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ErrCredentialUse means a credential may not be sent where it was asked
// to go: another tenant's, another host, or a plain-text transport.
var ErrCredentialUse = errors.New("credential not usable here")

// NormalizeCredentialHost returns host in the form Credential.Host keeps
// (lower case, "name" or "name:port", IPv6 in brackets), or ErrInvalid if
// it is not a bare host: no scheme, user, path or query.
func NormalizeCredentialHost(host string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(host))
	if h == "" {
		return "", fmt.Errorf("host is required: %w", ErrInvalid)
	}
	u, err := url.Parse("//" + h)
	if err != nil || u.Host != h || u.Hostname() == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("host %q: want a host name or host:port, without scheme or path: %w", host, ErrInvalid)
	}
	return h, nil
}

// CredentialTarget splits a URL a credential would be sent to (a git
// remote in any form git accepts, or a forge API base URL) into its
// scheme ("https", "http", "ssh", "git", "file", …) and host ("" for
// local paths). scp-like "user@host:path" is ssh.
func CredentialTarget(rawURL string) (scheme, host string) {
	if u, err := url.Parse(rawURL); err == nil && len(u.Scheme) > 1 {
		return strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	}
	if at := strings.Index(rawURL, "@"); at > 0 && !strings.HasPrefix(rawURL, "/") {
		if colon := strings.Index(rawURL[at:], ":"); colon > 0 {
			return "ssh", strings.ToLower(rawURL[at+1 : at+colon])
		}
	}
	return "file", ""
}

// CheckCredentialUse reports whether credential c may be sent to rawURL:
// the URL's host must be the host c is bound to (when c names no port, any
// port of that host), and the transport must encrypt (https or ssh; http
// only when allowHTTP, for local development). The error wraps
// ErrCredentialUse and never contains the secret.
func CheckCredentialUse(c Credential, rawURL string, allowHTTP bool) error {
	scheme, host := CredentialTarget(rawURL)
	switch scheme {
	case "https", "ssh":
	case "http":
		if !allowHTTP {
			return fmt.Errorf("credential %q: refusing to send it over plain http (use https, or start the server with --allow-insecure-credentials for local development): %w", c.Name, ErrCredentialUse)
		}
	default:
		return fmt.Errorf("credential %q: cannot be used with a %s source: %w", c.Name, scheme, ErrCredentialUse)
	}
	if (c.Kind == CredentialSSHKey) != (scheme == "ssh") {
		return fmt.Errorf("credential %q: a %s credential cannot be used over %s: %w", c.Name, c.Kind, scheme, ErrCredentialUse)
	}
	if !hostMatches(c.Host, host) {
		return fmt.Errorf("credential %q is bound to host %q, not %q: %w", c.Name, c.Host, host, ErrCredentialUse)
	}
	return nil
}

// hostMatches compares a credential's host with a URL's host: exactly
// when the credential names a port, else by host name alone.
func hostMatches(bound, host string) bool {
	if bound == "" || host == "" {
		return false
	}
	if _, _, err := net.SplitHostPort(bound); err == nil {
		return strings.EqualFold(bound, host)
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	return strings.EqualFold(strings.Trim(bound, "[]"), strings.Trim(name, "[]"))
}
