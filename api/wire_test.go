package api

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nkudo/nkudo/model"
)

// TestWireFormat pins the JSON of the types the store, the agent and the
// API share through model: moving a type must not change a byte on the wire.
func TestWireFormat(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	action := model.Action{ID: "a1", Operation: model.OpCreate, VM: "web", Reason: model.ReasonMissing, SpecHash: "h"}
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"plan", Plan{
			Plan:   model.Plan{ID: "p1", Tenant: "acme", Site: "s1", Commit: "c1", InventoryVersion: 3, Actions: []model.Action{action}},
			RepoID: "r1", Status: model.PlanSuperseded, SupersededBy: "p2", SupersededByCommit: "c2", CreatedAt: at, UpdatedAt: at,
			Actions: []Action{{Index: 0, Action: action, Status: model.ActionFailed, Error: "boom", Output: json.RawMessage(`{"pid":1}`), StartedAt: at, FinishedAt: at}},
		}, `{"plan":{"id":"p1","tenant":"acme","site":"s1","commit":"c1","inventoryVersion":3,"actions":[{"id":"a1","operation":"create","vm":"web","reason":"missing","specHash":"h"}]},` +
			`"repoId":"r1","status":"superseded","supersededBy":"p2","supersededByCommit":"c2","createdAt":"2026-03-01T12:00:00Z","updatedAt":"2026-03-01T12:00:00Z",` +
			`"actions":[{"index":0,"action":{"id":"a1","operation":"create","vm":"web","reason":"missing","specHash":"h"},"status":"failed","error":"boom","output":{"pid":1},"startedAt":"2026-03-01T12:00:00Z","finishedAt":"2026-03-01T12:00:00Z"}]}`},
		{"plan, zero", Plan{}, `{"plan":{"id":"","tenant":"","site":"","inventoryVersion":0,"actions":null},"status":"","createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"}`},
		{"action, zero", Action{}, `{"index":0,"action":{"id":"","operation":"","vm":"","reason":""},"status":""}`},
		{"result", ActionResult{PlanID: "p1", ActionID: "a1", Status: model.ActionSucceeded, Error: "e", Output: json.RawMessage(`{}`), StartedAt: at, FinishedAt: at},
			`{"planId":"p1","actionId":"a1","status":"succeeded","error":"e","output":{},"startedAt":"2026-03-01T12:00:00Z","finishedAt":"2026-03-01T12:00:00Z"}`},
		{"result, zero", ActionResult{}, `{"planId":"","actionId":"","status":""}`},
		{"log line", LogLine{PlanID: "p1", ActionID: "a1", Seq: 2, Time: at, Stream: StreamStderr, Line: "x"},
			`{"planId":"p1","actionId":"a1","seq":2,"time":"2026-03-01T12:00:00Z","stream":"stderr","line":"x"}`},
		{"log line, zero", LogLine{}, `{"planId":"","seq":0,"time":"0001-01-01T00:00:00Z","stream":"","line":""}`},
		{"preview", Preview{Tenant: "acme", RepoID: "r1", PR: 7, Commit: "c1", Summary: "s", PlanText: "t", PlanJSON: json.RawMessage(`{"sites":[]}`), CreatedAt: at},
			`{"repoId":"r1","pr":7,"commit":"c1","summary":"s","planText":"t","planJson":{"sites":[]},"createdAt":"2026-03-01T12:00:00Z"}`},
		{"preview, zero", Preview{}, `{"repoId":"","pr":0,"commit":"","summary":"","planText":"","createdAt":"0001-01-01T00:00:00Z"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("JSON changed:\ngot  %s\nwant %s", got, tc.want)
			}
		})
	}
}
