package configs

import "testing"

// edge.max_incoming_bytes is at least twice max_message_bytes: a message
// being received takes incoming bytes only while its connection would hold
// no more than the budget has left free, so one of the largest needs room
// for two; between one and two of them, such a message could never arrive.
func TestEdgeIncomingBudgetHoldsTwoOfTheLargestMessages(t *testing.T) {
	const head = "cluster: { bind: 127.0.0.1:7946 }\nedge: { max_message_bytes: 1048576, max_incoming_bytes: "
	if _, err := Parse("t.yaml", []byte(head+"2097152 }\n")); err != nil {
		t.Fatalf("twice max_message_bytes: %v", err)
	}
	_, err := Parse("t.yaml", []byte(head+"2097151 }\n"))
	expectProblem(t, err, "edge.max_incoming_bytes", "must be at least twice max_message_bytes (2097152), got 2097151")
}

// edge.max_queued_bytes is at least twice history.bytes: a resume's replay
// is taken only while its queue would hold no more than the send budget
// has left free, so a full history needs room for two; below that, no
// client could resume from its session's oldest msg.
func TestEdgeSendBudgetHoldsTwoFullHistories(t *testing.T) {
	const head = "cluster: { bind: 127.0.0.1:7946 }\nedge: { history: { bytes: 4194304 }, max_queued_bytes: "
	if _, err := Parse("t.yaml", []byte(head+"8388608 }\n")); err != nil {
		t.Fatalf("twice history.bytes: %v", err)
	}
	_, err := Parse("t.yaml", []byte(head+"8388607 }\n"))
	expectProblem(t, err, "edge.max_queued_bytes", "must be at least twice history.bytes (8388608), got 8388607")
}
