package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// handshakeTimeout bounds a TLS handshake, as net/http bounds it by
// ReadHeaderTimeout when it does the handshake itself.
const handshakeTimeout = 10 * time.Second

// handshakeListener completes each connection's TLS handshake on a
// goroutine of its own, and only then hands the connection to net/http.
// A goroutine's stack keeps the size its deepest call needed, and a TLS
// handshake is deep; net/http would run it on the goroutine that then
// serves the connection for as long as it lives, so every parked agent
// connection would keep a handshake-sized stack. Done here, that stack
// is freed with the short-lived goroutine.
type handshakeListener struct {
	net.Listener
	conf     *tls.Config
	failed   func(raw net.Conn) // a handshake failed: release what it held
	log      *slog.Logger
	ready    chan net.Conn
	done     chan struct{}
	closeErr error
	once     sync.Once
}

func newHandshakeListener(raw net.Listener, conf *tls.Config, failed func(net.Conn), log *slog.Logger) *handshakeListener {
	l := &handshakeListener{Listener: raw, conf: conf, failed: failed, log: log, ready: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *handshakeListener) acceptLoop() {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond) // as net/http backs off a temporary error
				continue
			}
			l.shut(err)
			return
		}
		go l.handshake(raw)
	}
}

func (l *handshakeListener) handshake(raw net.Conn) {
	tc := tls.Server(raw, l.conf)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		l.log.Debug("TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		if l.failed != nil {
			l.failed(raw)
		}
		return
	}
	_ = raw.SetDeadline(time.Time{})
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// Accept returns the next connection whose handshake completed.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.closeErr
	}
}

// Close stops accepting; handshakes in progress end with their
// connections closed.
func (l *handshakeListener) Close() error {
	err := l.Listener.Close()
	l.shut(net.ErrClosed)
	return err
}

func (l *handshakeListener) shut(err error) {
	l.once.Do(func() {
		l.closeErr = err
		close(l.done)
	})
}
