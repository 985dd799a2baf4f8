package controlplane

import (
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/internal/commitsig"
	"github.com/nkudo/nkudo/store"
)

// verifyPolicy checks a commit signature policy from the API: a known mode
// and keys that parse, so a typo is refused here rather than turning every
// later commit into "not signed by a trusted key".
func verifyPolicy(p api.VerifyPolicy) (store.VerifyPolicy, error) {
	switch p.Mode {
	case "":
		if p.AllowedSigners != "" || p.GPGKeys != "" {
			return store.VerifyPolicy{}, badRequest("field \"verify.mode\" is required with keys: head or all")
		}
		return store.VerifyPolicy{}, nil
	case api.VerifyHead, api.VerifyAll:
	default:
		return store.VerifyPolicy{}, badRequest("field \"verify.mode\": %q is not head or all", p.Mode)
	}
	if p.AllowedSigners == "" && p.GPGKeys == "" {
		return store.VerifyPolicy{}, badRequest("field \"verify\": mode %s needs allowedSigners or gpgKeys", p.Mode)
	}
	if _, err := commitsig.Parse(p.AllowedSigners, p.GPGKeys); err != nil {
		return store.VerifyPolicy{}, badRequest("verify.%s", err.Error())
	}
	return store.VerifyPolicy{Mode: store.VerifyMode(p.Mode), AllowedSigners: p.AllowedSigners, GPGKeys: p.GPGKeys}, nil
}

// verifyView renders a stored policy (nil when verification is off).
func verifyView(p store.VerifyPolicy) *api.VerifyPolicy {
	if !p.Enabled() {
		return nil
	}
	return &api.VerifyPolicy{Mode: string(p.Mode), AllowedSigners: p.AllowedSigners, GPGKeys: p.GPGKeys}
}
