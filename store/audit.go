package store

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// AuditKey keys the audit chain: each event's MAC is HMAC-SHA256 under it
// over the event's hash (which covers its content and, through PrevHash,
// every event before it). It lives outside the database (beside the CA),
// so someone who can write the database but not read the key cannot edit
// an event and re-chain the rest unnoticed. It never prints.
type AuditKey []byte

// MAC returns the hex HMAC-SHA256 of an event hash under k.
func (k AuditKey) MAC(hash string) string {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(hash))
	return hex.EncodeToString(m.Sum(nil))
}

// ID names the key without revealing it (the first 8 bytes of an HMAC of a
// fixed label), so the chain can say which key it was keyed with.
func (k AuditKey) ID() string {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("n-kudo audit key id"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

func (k AuditKey) String() string   { return "[audit key]" }
func (k AuditKey) GoString() string { return "[audit key]" }

// ActionAuditKeyed is the event that starts the keyed part of the chain:
// the first event a store with an AuditKey appends to a chain that has
// none. Every event from it on carries a MAC; events before it were written
// before the chain was keyed and are protected from it on only as the
// prefix its hash covers.
const ActionAuditKeyed = "audit.keyed"

// AuditHash computes an event's own hash: SHA-256 over its predecessor's
// hash and a canonical encoding of its content (a JSON array of seq, time
// in UTC RFC 3339 with microseconds, tenant, actor, action, object and the
// compact detail). Backends store it; VerifyAudit recomputes it.
func AuditHash(e AuditEvent) string {
	detail := CompactJSON(e.Detail)
	canon, err := json.Marshal([]any{
		e.Seq,
		e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		e.Tenant, e.Actor, e.Action, e.Object, string(detail),
	})
	if err != nil {
		panic("store: marshal audit event: " + err.Error()) // only strings and ints
	}
	h := sha256.New()
	h.Write([]byte(e.PrevHash))
	h.Write([]byte{'\n'})
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil))
}

// CompactJSON returns raw without insignificant space ("" stays empty; input
// that is not JSON is returned unchanged and rejected by the backend).
func CompactJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	if b.String() == "null" || b.String() == "{}" {
		return nil
	}
	return b.Bytes()
}

// Detail marshals v (a map or struct) for AuditEvent.Detail.
func Detail(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	return CompactJSON(b)
}

// Micro truncates t to the stored precision (microseconds, UTC). Zero stays zero.
func Micro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}
