package agent

import "os"

// SetOutboxWrite replaces how o writes its files (nil restores the real,
// atomic write), so tests can make the outbox's disk fail and recover.
func SetOutboxWrite(o *Outbox, f func(path string, data []byte, perm os.FileMode) error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.write = f
}
