package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// httpError is an error with the status and code to answer with.
type httpError struct {
	status int
	code   api.Code
	msg    string
	// retryAfter, when set, is sent as the Retry-After header.
	retryAfter time.Duration
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, code api.Code, format string, args ...any) error {
	return &httpError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, api.CodeBadRequest, format, args...)
}

func notFound(what string) error {
	return errorf(http.StatusNotFound, api.CodeNotFound, "%s not found", what)
}

// toHTTPError maps domain and store errors to an answer. Store messages
// only ever name the caller's own objects (other tenants' look absent), so
// they are safe to pass through for the expected sentinels.
func toHTTPError(err error) (*httpError, bool) {
	var he *httpError
	if errors.As(err, &he) {
		return he, true
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &httpError{status: http.StatusRequestEntityTooLarge, code: api.CodeTooLarge, msg: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit)}, true
	case errors.Is(err, store.ErrNotFound):
		return &httpError{status: http.StatusNotFound, code: api.CodeNotFound, msg: err.Error()}, true
	case errors.Is(err, store.ErrSuperseded):
		return &httpError{status: http.StatusConflict, code: api.CodeSuperseded, msg: err.Error()}, true
	case errors.Is(err, store.ErrConflict):
		return &httpError{status: http.StatusConflict, code: api.CodeConflict, msg: err.Error()}, true
	case errors.Is(err, store.ErrInvalid):
		return &httpError{status: http.StatusBadRequest, code: api.CodeBadRequest, msg: err.Error()}, true
	case errors.Is(err, pki.ErrBadCSR):
		return &httpError{status: http.StatusBadRequest, code: api.CodeBadRequest, msg: err.Error()}, true
	case errors.Is(err, store.ErrBusy):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, msg: err.Error(), retryAfter: spreadRetryAfter()}, true
	case errors.Is(err, context.Canceled), errors.Is(err, store.ErrClosed):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, msg: "server is shutting down or the request was cancelled"}, true
	}
	return &httpError{status: http.StatusInternalServerError, code: api.CodeInternal, msg: "internal error; see the server log"}, false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encode response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeErr(w http.ResponseWriter, he *httpError) {
	if he.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(he.retryAfter.Seconds()+0.999)))
	}
	writeJSON(w, he.status, api.ErrorBody{Error: api.ErrorDetail{Code: he.code, Message: he.msg}})
}

// decodeOptional is decode for bodies that may be left out entirely.
func decodeOptional(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeBody(body, v)
}

// decode reads one JSON value from the (size-limited) body into v,
// rejecting unknown fields and trailing data. The message names the field
// or the byte offset of the problem.
func decode(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("request body is empty; want a JSON object")
	}
	return decodeBody(body, v)
}

// readBody reads the whole request body; a body over the size limit keeps
// its *http.MaxBytesError so the caller answers 413.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, badRequest("read request body: %v", err)
	}
	return body, nil
}

// decodeBody is decode's parse of a body already read.
func decodeBody(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("malformed JSON: the body ends inside the JSON value")
		case errors.As(err, &se):
			return badRequest("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return badRequest("field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		return badRequest("invalid request body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return badRequest("request body has data after the JSON value")
	}
	return nil
}

// queryInt parses an optional integer query parameter.
func queryInt(r *http.Request, name string, def int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("query parameter %s=%q: want a non-negative integer", name, v)
	}
	return n, nil
}
