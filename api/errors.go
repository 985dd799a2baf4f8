package api

import (
	"errors"
	"fmt"
	"time"
)

// Code is a machine-readable error code in the error envelope. Clients map
// codes to the sentinel errors below with errors.Is; never match messages.
type Code string

// Error codes and their HTTP statuses.
const (
	CodeBadRequest      Code = "bad_request"            // 400: malformed JSON, bad field, unknown field
	CodeUnauthorized    Code = "unauthorized"           // 401: no or unknown credentials
	CodeTokenInvalid    Code = "token_invalid"          // 401: enrollment token unknown or wrong secret
	CodeTokenUsed       Code = "token_used"             // 401: enrollment token already redeemed
	CodeTokenExpired    Code = "token_expired"          // 401: enrollment or API token expired
	CodeCertRevoked     Code = "cert_revoked"           // 401: client certificate revoked
	CodeCertInvalid     Code = "cert_invalid"           // 401: client certificate expired, foreign or without identity
	CodeForbidden       Code = "forbidden"              // 403: authenticated but not allowed
	CodeNotFound        Code = "not_found"              // 404: absent, or of another tenant or site
	CodeMethod          Code = "method_not_allowed"     // 405
	CodeConflict        Code = "conflict"               // 409: name taken, different result for a finished action
	CodeSuperseded      Code = "superseded"             // 409: the plan was superseded by a newer one
	CodeTooLarge        Code = "payload_too_large"      // 413: body over the limit
	CodeUnsupportedType Code = "unsupported_media_type" // 415
	CodeRateLimited     Code = "rate_limited"           // 429: retry after the Retry-After header
	CodeInternal        Code = "internal"               // 500
	CodeNotImplemented  Code = "not_implemented"        // 501: feature not configured on this server
	CodeUnavailable     Code = "unavailable"            // 503: shutting down or database unreachable
)

// Sentinel errors returned (wrapped in *Error) by the Client.
var (
	ErrBadRequest     = errors.New("bad request")
	ErrUnauthorized   = errors.New("unauthorized")
	ErrTokenInvalid   = errors.New("enrollment token invalid")
	ErrTokenUsed      = errors.New("enrollment token already used")
	ErrTokenExpired   = errors.New("token expired")
	ErrCertRevoked    = errors.New("certificate revoked")
	ErrCertInvalid    = errors.New("certificate invalid")
	ErrForbidden      = errors.New("forbidden")
	ErrNotFound       = errors.New("not found")
	ErrConflict       = errors.New("conflict")
	ErrSuperseded     = errors.New("plan superseded")
	ErrTooLarge       = errors.New("payload too large")
	ErrRateLimited    = errors.New("rate limited")
	ErrInternal       = errors.New("internal server error")
	ErrNotImplemented = errors.New("not implemented")
	ErrUnavailable    = errors.New("unavailable")
)

var codeSentinels = map[Code]error{
	CodeBadRequest:      ErrBadRequest,
	CodeUnauthorized:    ErrUnauthorized,
	CodeTokenInvalid:    ErrTokenInvalid,
	CodeTokenUsed:       ErrTokenUsed,
	CodeTokenExpired:    ErrTokenExpired,
	CodeCertRevoked:     ErrCertRevoked,
	CodeCertInvalid:     ErrCertInvalid,
	CodeForbidden:       ErrForbidden,
	CodeNotFound:        ErrNotFound,
	CodeMethod:          ErrBadRequest,
	CodeConflict:        ErrConflict,
	CodeSuperseded:      ErrSuperseded,
	CodeTooLarge:        ErrTooLarge,
	CodeUnsupportedType: ErrBadRequest,
	CodeRateLimited:     ErrRateLimited,
	CodeInternal:        ErrInternal,
	CodeNotImplemented:  ErrNotImplemented,
	CodeUnavailable:     ErrUnavailable,
}

// Sentinel returns the sentinel error for code (nil for an unknown code).
func Sentinel(code Code) error { return codeSentinels[code] }

// ErrorBody is the JSON envelope of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the content of the envelope.
type ErrorDetail struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Error is an error response as the Client returns it. errors.Is(err,
// api.ErrNotFound) and friends work through Unwrap, by code.
type Error struct {
	Status  int // HTTP status
	Code    Code
	Message string
	// RetryAfter is the server's Retry-After header (0 = none): how long
	// to wait before asking again, with 503 and 429 answers.
	RetryAfter time.Duration
}

// RetryAfter is how long err (an *Error in its chain) asks the caller to
// wait before the next request; 0 when it does not say.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// Unwrap maps the code to its sentinel. An unknown code (from a newer
// server) falls back to the sentinel of the status class.
func (e *Error) Unwrap() error {
	if s := Sentinel(e.Code); s != nil {
		return s
	}
	switch {
	case e.Status == 404:
		return ErrNotFound
	case e.Status == 401:
		return ErrUnauthorized
	case e.Status == 403:
		return ErrForbidden
	case e.Status == 409:
		return ErrConflict
	case e.Status == 429:
		return ErrRateLimited
	case e.Status >= 500:
		return ErrInternal
	case e.Status >= 400:
		return ErrBadRequest
	}
	return nil
}
