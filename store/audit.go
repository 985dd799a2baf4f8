package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

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
