package egress_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"

	"github.com/nkudo/nkudo/internal/egress"
)

// TestSSHAuthRefusesDeniedAddress: over a real SSH handshake, the host-key
// check of an auth wrapped by SSHAuth refuses a loopback server before any
// credential reaches it; with loopback allowed the handshake goes on to
// the pinned key.
func TestSSHAuthRefusesDeniedAddress(t *testing.T) {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	var authAttempts atomic.Int64
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
		authAttempts.Add(1)
		return nil, errors.New("no")
	}}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _, _, _ = ssh.NewServerConn(c, cfg)
			}()
		}
	}()

	_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(userPriv)
	keys := &gitssh.PublicKeys{User: "git", Signer: signer}
	keys.HostKeyCallback = ssh.FixedHostKey(hostKey.PublicKey())

	dial := func(p egress.Policy) error {
		auth := egress.NewGit(p, 0).SSHAuth(keys).(gitssh.AuthMethod)
		cc, err := auth.ClientConfig()
		if err != nil {
			return err
		}
		c, err := ssh.Dial("tcp", ln.Addr().String(), cc)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(egress.Policy{}); !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("ssh to loopback: err = %v, want ErrDenied", err)
	}
	if n := authAttempts.Load(); n != 0 {
		t.Fatalf("the denied server saw %d authentication attempts", n)
	}
	if err := dial(egress.Policy{Allow: egress.Loopback()}); err == nil || errors.Is(err, egress.ErrDenied) {
		t.Fatalf("ssh to loopback allowed: err = %v, want the server's refusal of the key", err)
	}
	if authAttempts.Load() == 0 {
		t.Error("with loopback allowed the client never authenticated")
	}
}
