// Package streams is netsource's event store on NATS JetStream: the subject scheme, the two
// streams (NETSOURCE_DESIRED and NETSOURCE_STATUS), the publisher client and the readers.
//
// # Subjects
//
// One subject holds one aggregate: ns.desired.network.<id>, ns.desired.secgroup.<id> and
// ns.desired.host.<host>.<kind>.<id>. Status goes to ns.status.<host>.<kind>.<id> and the
// heartbeat to ns.status.<host>.agent. Host names and ids are checked before they become
// subject tokens; a `.`, `*`, `>` or whitespace never reaches a subject.
//
// # Writing
//
// Publisher appends one DesiredEvent per aggregate change with optimistic concurrency
// (Nats-Expected-Last-Subject-Sequence) and deduplication (Nats-Msg-Id = event id). A stale
// writer gets a *ConflictError. A publish retried after a lost acknowledgement is reported
// as success: on a single server (R1) JetStream checks the expected sequence before the
// dedup map and answers "wrong last sequence", so on a conflict the publisher reads the last
// message of the subject and compares its Nats-Msg-Id with its own.
//
// # Reading
//
// Follow and LoadLast read the last message per subject (the whole current state) with an
// ordered consumer (DeliverLastPerSubject); Follow then keeps delivering new messages.
//
// # Concurrency
//
// Publisher is safe for concurrent use. Never pipeline two publishes to the same aggregate:
// each expected-sequence publish must see the previous one's acknowledgement.
package streams
