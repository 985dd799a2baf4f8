package gitcopy_test

import (
	"context"
	"errors"
	"testing"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/nkudo/nkudo/internal/gitcopy"
	"github.com/nkudo/nkudo/reconciler/gittest"
)

// TestCopy copies histories below and above UnpackLimit (loose objects,
// then one pack) into a destination that already holds part of them, and
// checks every object reachable from the tip arrived.
func TestCopy(t *testing.T) {
	r := gittest.New(t)
	r.Write("a/one.yaml", "x: 1\n")
	first := r.Commit("one")
	r.Fleet("fleet", gitcopy.UnpackLimit, 1)
	second := r.Commit("fleet")
	src, err := git.PlainOpen(r.Work)
	if err != nil {
		t.Fatal(err)
	}
	dst := memory.NewStorage()
	for _, tip := range []string{first, second, second} {
		c := gitcopy.New(t.Context(), src.Storer, dst)
		if err := c.History(plumbing.NewHash(tip)); err != nil {
			t.Fatalf("history %s: %v", tip, err)
		}
		if err := c.Write(t.TempDir()); err != nil {
			t.Fatalf("write %s: %v", tip, err)
		}
		iter, err := src.Log(&git.LogOptions{From: plumbing.NewHash(tip)})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		err = iter.ForEach(func(c *object.Commit) error {
			tree, err := c.Tree()
			if err != nil {
				return err
			}
			walk := object.NewTreeWalker(tree, true, nil)
			defer walk.Close()
			for _, h := range []plumbing.Hash{c.Hash, c.TreeHash} {
				if dst.HasEncodedObject(h) != nil {
					t.Errorf("tip %s: %s missing from the destination", tip, h)
				}
			}
			for {
				name, e, err := walk.Next()
				if err != nil {
					break
				}
				n++
				if dst.HasEncodedObject(e.Hash) != nil {
					t.Errorf("tip %s: %s (%s) missing from the destination", tip, name, e.Hash)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("tip %s: walked no tree entries", tip)
		}
	}
}

func TestCopyCancelled(t *testing.T) {
	r := gittest.New(t)
	r.Write("one.yaml", "x: 1\n")
	tip := r.Commit("one")
	src, err := git.PlainOpen(r.Work)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	dst := memory.NewStorage()
	err = gitcopy.New(ctx, src.Storer, dst).History(plumbing.NewHash(tip))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("History with a cancelled context: %v, want context.Canceled", err)
	}
	if dst.HasEncodedObject(plumbing.NewHash(tip)) == nil {
		t.Error("a cancelled copy wrote the commit")
	}
}

func TestLocalPath(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"/srv/git/fleet.git", "/srv/git/fleet.git"},
		{"file:///srv/git/fleet.git", "/srv/git/fleet.git"},
		{"https://example.com/fleet.git", ""},
		{"git@example.com:fleet.git", ""},
	} {
		if got := gitcopy.LocalPath(tc.url); got != tc.want {
			t.Errorf("LocalPath(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}
