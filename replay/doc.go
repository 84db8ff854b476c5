// Package replay reads netsource's history back and answers questions about it: what the
// system wanted, what the agents did, and when. It is the library behind `netsource replay`.
//
// # Sources
//
// A Source is a history: a live server (Live, which reads with ordered consumers and keeps
// no state on the server) or a replay file (File, which re-reads the file for each question
// and holds nothing in memory). Both give the same answers for the same history; that is a
// tested property, and it is what lets an operator take a history away and debug offline.
// Records carry the time and sequence a message had when it was first stored: an imported
// history keeps them in Ns-Replay-* headers that every reader reports instead of the
// importing server's.
//
// # Questions
//
//   - ObjectTimeline: one object's desired and status events merged in time order, the
//     field-level changes between consecutive desired versions (DiffMessages, by
//     protoreflect, with paths as the topology file names fields), who published each
//     version, and how long each took to converge (published → a status of the version's
//     host reaching that version or a later one in the wanted phase). A port that moved
//     shows both hosts.
//   - StateAt: the desired state at a sequence or a time, as a topology `apply -f` accepts.
//     It keeps the last message per subject and decodes only those, so its cost per event
//     is a map update.
//   - Diff: desired state against the latest status (no status, lagging, ERROR, not in the
//     wanted phase) and agents whose heartbeat is older than three report intervals.
//   - Export and Import: the history as a file of length-delimited ReplayRecord messages
//     (proto/netsource/v1/replay.proto) and back into an empty server, keeping desired
//     sequences (status events refer to them) and every record's time, so that export →
//     import → export gives the same bytes.
//   - Simulate: one host's actor tree (the agent's own actors) run over its history against
//     a Recorder around a links.Fake, printing every dataplane call and kernel write. The
//     output is deterministic: see Simulator for how the concurrent tree is made to run in
//     one canonical order, and how the end of each step is known rather than waited for.
//
// # Bounds
//
// A Bound is a desired stream sequence or a time. The status stream has sequences of its
// own, so a sequence bound cuts status messages at that desired message's time (Select).
//
// # Concurrency
//
// Live and File are safe for concurrent use. A Simulator is driven by one goroutine: every
// actor of its tree runs on the goroutine that feeds it.
package replay
