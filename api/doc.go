// Package api is the wire contract between the n-kudo control plane, the
// edge agent and the CLI: request and response types, URL paths, the error
// envelope with its codes, the protocol version, and a typed Client.
//
// Every endpoint lives under /v1. Agents authenticate with mTLS client
// certificates issued at enrollment; people and the CLI use bearer API
// tokens, scoped to one tenant or to the whole installation (admin).
// docs/api.md describes each endpoint.
//
// # Protocol version
//
// ProtocolVersion increases by one whenever the agent-facing contract
// changes in a way an older peer could notice. Additive fields in responses
// do not bump it. New fields in agent requests do, because the server
// rejects unknown fields in agent reports, unless they are gated by a
// feature: the server lists the additions it accepts in
// HeartbeatResponse.Features and an agent sends them only after it has
// seen the feature, so old and new peers on either side keep working.
// Changelog:
//
//   - 1 (2026-11-26): first version: enroll, renew, heartbeat with host facts
//     and inventory, plan long-poll, action results, ordered log batches.
//   - 1 (2026-11-27): HeartbeatResponse.Features; HostFacts.CPUModel,
//     AgentVersion, KVMError, Unknown and OutboxDropped, sent under
//     FeatureTypedFacts (before, and to older servers, as labels).
//   - 1 (2026-11-27): the plan long-poll's superseded=1 parameter
//     (Client.WatchPlan): the answer for a plan that was superseded or
//     cancelled, with AgentPlan.SupersededBy and SupersededByCommit;
//     Plan.SupersededByCommit. Older servers ignore the parameter.
//   - 1 (2026-12-07): LogsResponse.Truncated, Dropped and Closed (log line
//     cap and log quotas; an agent stops sending a closed plan's lines);
//     LogPage.Next (pages bounded in bytes; follow it) and LogPage.Dropped.
//     Response fields only: older peers ignore them.
//   - 1 (2026-12-07): GET /v1/agent/images/sha256/{sha256}: images pushed
//     to the control plane, fetched by the agent like any image URL. A new
//     route only: older agents fetch it as plain HTTPS (and fail on the
//     control plane's private CA without their certificate).
//   - 1 (2026-12-07): ClientConfig.FailoverURLs (an agent knows several
//     replicas and moves to the next on a connection error or 5xx) and
//     Error.RetryAfter (the Retry-After header of a 503 or 429, which the
//     agent waits out), ClientConfig.IdlePing (a silent connection is
//     pinged and dropped when the ping goes unanswered). Client-side only:
//     no wire change.
//   - 1 (2026-12-07): agent routes answer 503 unavailable with Retry-After
//     when the control plane is at its overload bound; the plan long-poll's
//     wait is capped at 5 minutes (was 60 s) and the agent asks for 2.
//     Older agents retry a 503 with their own backoff and keep their 30 s
//     polls.
package api

// ProtocolVersion is the agent protocol this package speaks; see the changelog above.
const ProtocolVersion = 1
